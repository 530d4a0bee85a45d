"""The `riskgate` command line: a thin shell over `riskgate.api.check`.

Only this module maps errors and verdicts to exit codes and prints.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

import click

from . import __version__
from .errors import ExitCode, InvalidInputError, PolicyError, RiskgateError, WaiverError

EXIT_CODES_HELP = """\b
Exit codes:
  0  pass (warnings included, unless --fail-on-warn)
  1  policy failure (or a warning with --fail-on-warn)
  2  invalid input or usage: model, dataset, policy, waivers, plan or flags
  3  runtime error or incomplete analysis (verdict `error`)
"""

DATASET_FORMATS = ["messages", "sharegpt", "alpaca", "prompt_completion", "text"]
# The keys of riskgate.report.writer.RENDERERS, spelt out so that `--help` imports no report
# code; tests/test_cli.py checks that the two lists agree.
REPORT_FORMATS = ["json", "markdown", "html", "sarif", "junit", "github"]
DEFAULT_CHECK_FORMATS = ["json", "markdown", "html"]


def one_line(message: str) -> str:
    """Return `message` on one line: line breaks and other control characters become escapes.

    Error messages quote dataset values and column names, and a line break in those must not
    start a new output line (a line starting with `::error::` is a GitHub workflow command).
    """
    out = []
    for char in str(message):
        if char in "\r\n":
            out.append("\\n" if char == "\n" else "\\r")
        elif ord(char) < 32 or ord(char) == 127:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def _parse_columns(values: tuple[str, ...], flag: str) -> dict[str, str] | None:
    if not values:
        return None
    mapping: dict[str, str] = {}
    for value in values:
        key, sep, column = value.partition("=")
        if not sep or not key.strip() or not column.strip():
            raise click.BadParameter(f"{value!r}: expected FIELD=COLUMN, for example output=response", param_hint=flag)
        mapping[key.strip()] = column.strip()
    return mapping


def placement_options(command):
    """Add --device-map and --offload-dir, which `check` and `subspace build` share, to `command`."""
    command = click.option("--offload-dir", type=click.Path(path_type=Path), metavar="DIR",
                           help="Folder for the weights of modules that --device-map sends to disk.")(command)
    return click.option(
        "--device-map", metavar="MAP",
        help="Spread a model that does not fit one device with accelerate's big-model placement: "
             "auto, balanced, balanced_low_0, sequential, or a JSON file mapping module names to "
             "devices (\"cpu\", \"disk\", 0, \"cuda:1\"). Curvature then uses finite differences.",
    )(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="riskgate")
def main() -> None:
    """riskgate: forecast how much a fine-tune erodes an aligned model's safety, as a CI gate."""


@main.command(epilog=EXIT_CODES_HELP)
@click.option("--model", "model", required=True, metavar="MODEL",
              help="Local model folder (config.json + safetensors), a hub id already in the local "
                   "Hugging Face cache, or a .gguf file. Nothing is ever downloaded.")
@click.option("--dataset", "dataset", required=True, type=click.Path(path_type=Path), metavar="DATA",
              help="Proposed fine-tune data: JSONL, JSON, CSV, Parquet or a `datasets` folder.")
@click.option("--policy", default="default", show_default=True, metavar="POLICY",
              help="Policy YAML file, or a preset name: default, strict, permissive.")
@click.option("--safety-data", type=click.Path(path_type=Path), metavar="DATA",
              help="Harmful requests with refusals; replaces the built-in safety set.")
@click.option("--dataset-format", type=click.Choice(DATASET_FORMATS),
              help="Format of --dataset; detected from the records when omitted.")
@click.option("--columns", "dataset_columns", multiple=True, metavar="FIELD=COLUMN",
              help="Map a format field to a column of --dataset, e.g. output=response. Repeatable.")
@click.option("--safety-format", type=click.Choice(DATASET_FORMATS), help="Format of --safety-data.")
@click.option("--safety-columns", multiple=True, metavar="FIELD=COLUMN",
              help="Map a format field to a column of --safety-data, e.g. completion=Safe_Response. Repeatable.")
@click.option("--params", "params", multiple=True, metavar="PATTERN",
              help="Glob (or `re:` regex) over parameter names to analyse. Repeatable. "
                   "Default: the 2-D weights of the last two transformer blocks.")
@click.option("--learning-rate", type=float, help="Planned peak learning rate. Default 5e-5.")
@click.option("--max-steps", type=int, help="Planned optimizer steps. Default: 3 epochs.")
@click.option("--batch-size", type=int, help="Planned sequences per optimizer step. Default 8.")
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), help="Planned optimizer. Default adamw.")
@click.option("--train-config", type=click.Path(path_type=Path), metavar="FILE",
              help="YAML or JSON with TrainingArguments names (learning_rate, max_steps or "
                   "num_train_epochs, per_device_train_batch_size, gradient_accumulation_steps, optim).")
@click.option("--lora-config", type=click.Path(path_type=Path), metavar="FILE",
              help="The plan trains a LoRA adapter: PEFT's adapter_config.json, the adapter folder that "
                   "holds it, or YAML with LoraConfig keys r, lora_alpha, target_modules. The diagnostics "
                   "then analyse the adapter's factors, A drawn with --seed.")
@click.option("--max-safety-examples", type=int, default=128, show_default=True,
              help="Safety sequences analysed at most (sampled with --seed).")
@click.option("--max-finetune-examples", type=int, default=64, show_default=True,
              help="Fine-tune sequences analysed at most (sampled with --seed).")
@click.option("--max-seq-len", type=int, default=256, show_default=True,
              help="Tokens per sequence at most; longer ones are truncated and counted.")
@click.option("--time-budget", type=float, metavar="SECONDS",
              help="Wall-clock limit for the whole check; past it the verdict is `error`.")
@click.option("--output-dir", type=click.Path(path_type=Path), default=Path("riskgate-report"),
              show_default=True, help="Folder for the reports.")
@click.option("--format", "formats", multiple=True, type=click.Choice(REPORT_FORMATS),
              help="Report format to write into --output-dir: json, markdown, html, sarif (SARIF "
                   "2.1.0), junit (JUnit XML) or github (workflow annotations). Repeatable. "
                   "Default: json, markdown and html.")
@click.option("--fail-on-warn", is_flag=True, help="Exit 1 when the verdict is `warn`.")
@click.option("--what-if-drop", type=int, default=0, show_default=True, metavar="K",
              help="Rerun the fine-tune side without the K records that carry the largest share "
                   "of the forecast drift, and report the verdict before and after.")
@click.option("--export-filtered", type=click.Path(path_type=Path), metavar="FILE",
              help="With --what-if-drop: write the dataset without those records, in its own format.")
@click.option("--waivers", type=click.Path(path_type=Path), metavar="FILE",
              help="Waivers YAML: accepted fail and warn findings for one model and dataset "
                   "(by sha256), each with a reason and an optional expiry date.")
@click.option("--max-memory", metavar="SIZE",
              help="Memory limit for the diagnostics, e.g. 16G: gradients stay exact when they fit "
                   "and are compressed by a CountSketch otherwise (the report states its error). "
                   "Default: 80% of the available memory.")
@placement_options
@click.option("--spill-dir", type=click.Path(path_type=Path), metavar="DIR",
              help="Folder on a disk with room for the gradient rows: when they do not fit --max-memory, "
                   "they stay exact in a memory-mapped file there (the streamed path) instead of being sketched.")
@click.option("--hvp-method", type=click.Choice(["auto", "forward_over_reverse", "double_backward", "finite_difference"]),
              default="auto", show_default=True,
              help="How Hessian-vector products are computed; auto takes double backward, then "
                   "forward over reverse, then finite differences, whichever works first.")
@click.option("--device", default="auto", show_default=True, metavar="DEVICE",
              help="auto (CUDA when available, else CPU), cpu, cuda, cuda:N or mps.")
@click.option("--subspace", type=click.Path(path_type=Path), metavar="FILE",
              help="Reuse the safety side saved by `riskgate subspace build` for the same model, "
                   "safety data, --params, --max-seq-len, --max-safety-examples, --seed and --lora-config.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for every sampling choice.")
@click.option("--dtype", type=click.Choice(["float32", "float64", "bfloat16", "float16"]),
              help="Precision to run the model in. Default float32.")
@click.option("--allow-pickle", is_flag=True,
              help="Allow pickle checkpoints (pytorch_model.bin), loaded with weights_only=True.")
@click.option("--trust-remote-code", is_flag=True, help="Allow checkpoints that ship their own model code.")
@click.option("-v", "--verbose", count=True, help="More log output.")
@click.option("-q", "--quiet", is_flag=True, help="Only the summary and the verdict line.")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def check(**options) -> None:
    """Run the diagnostics and gate a fine-tune against a policy."""
    from .console import Console

    verbosity = -1 if options["quiet"] else options["verbose"]
    console = Console(verbosity=verbosity)
    _interrupt_on_sigterm()
    _configure_logging(verbosity, options["debug"])
    code = _run_check(console, options)
    sys.exit(int(code))


def _interrupt_on_sigterm() -> None:
    """Treat SIGTERM (how CI systems cancel a job) like Ctrl-C: exit 3 with a message."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, interrupt)
    except ValueError:
        # Only the main thread may set handlers; an embedding host keeps its own.
        pass


def _configure_logging(verbosity: int, debug: bool) -> None:
    if debug or verbosity >= 2:
        level = logging.DEBUG
    elif verbosity == 1:
        level = logging.INFO
    else:
        level = logging.WARNING
    logging.basicConfig(level=level, format="riskgate: %(levelname)s: %(name)s: %(message)s", stream=sys.stderr)


def _run_check(console, options) -> ExitCode:
    from .api import check as run_check
    from .budget import Budget

    try:
        _prepare_output_dir(options["output_dir"])
        budget = Budget(
            max_safety_examples=options["max_safety_examples"],
            max_finetune_examples=options["max_finetune_examples"],
            max_seq_len=options["max_seq_len"],
            time_budget_s=options["time_budget"],
        )
        with console.progress() as progress:
            result = run_check(
                options["model"],
                options["dataset"],
                options["policy"],
                safety_data=options["safety_data"],
                dataset_format=options["dataset_format"],
                dataset_columns=_parse_columns(options["dataset_columns"], "--columns"),
                safety_format=options["safety_format"],
                safety_columns=_parse_columns(options["safety_columns"], "--safety-columns"),
                params=list(options["params"]) or None,
                learning_rate=options["learning_rate"],
                max_steps=options["max_steps"],
                batch_size=options["batch_size"],
                optimizer=options["optimizer"],
                train_config=options["train_config"],
                budget=budget,
                seed=options["seed"],
                dtype=options["dtype"],
                allow_pickle=options["allow_pickle"],
                trust_remote_code=options["trust_remote_code"],
                fail_on_warn=options["fail_on_warn"],
                waivers=options["waivers"],
                what_if_drop=options["what_if_drop"],
                export_filtered=options["export_filtered"],
                max_memory=options["max_memory"],
                hvp_method=options["hvp_method"],
                subspace=options["subspace"],
                device=options["device"],
                lora_config=options["lora_config"],
                spill_dir=options["spill_dir"],
                device_map=options["device_map"],
                offload_dir=options["offload_dir"],
                progress=progress,
            )
    except click.BadParameter:
        raise
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - every error ends as one line
        return _error_code(console, exc, debug=options["debug"], policy=options["policy"])

    if result.report.get("engine", {}).get("rank", 0) != 0:
        # Under torchrun every rank has the same result, so rank 0 alone writes and prints it.
        return ExitCode(result.exit_code)
    return _finish(console, result, options)


def _prepare_output_dir(folder: Path) -> None:
    """Create the report folder, check that it is writable, and remove reports of earlier runs.

    Checking first saves a full analysis that could not be saved. Removing old reports keeps a
    failed or interrupted run from leaving an earlier verdict in place, where CI would read it.
    """
    import tempfile

    from .errors import EnvironmentFailure
    from .report.writer import RENDERERS

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".riskgate-write-check-"):
            pass
        for renderer in RENDERERS.values():
            (folder / renderer.filename).unlink(missing_ok=True)
    except OSError as exc:
        raise EnvironmentFailure(
            f"{folder}: report folder is not writable ({exc.strerror or exc}); choose a writable --output-dir"
        ) from None


def _finish(console, result, options) -> ExitCode:
    """Write the reports, print the summary, and end with the verdict line."""
    from .errors import EnvironmentFailure

    report = result.report
    code = ExitCode(result.exit_code)
    formats = list(options["formats"]) or DEFAULT_CHECK_FORMATS
    try:
        paths = result.write(options["output_dir"], formats)
        for fmt, path in paths.items():
            console.info(f"riskgate: wrote {fmt} report: {path}")
    except EnvironmentFailure as exc:
        console.result(console.table("riskgate summary", _summary_rows(report)))
        console.result(one_line(
            f"riskgate: ERROR: the reports could not be written ({exc}); "
            f"the analysis verdict was {report['verdict'].upper()}: {report['reason']}"
        ))
        return ExitCode.RUNTIME_ERROR

    console.result(console.table("riskgate summary", _summary_rows(report)))
    console.result(one_line(f"riskgate: {report['verdict'].upper()}: {report['reason']}"))
    return code


def _fmt(value, spec: str = ".4g") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _summary_rows(report: dict) -> list[tuple[str, str]]:
    checks = report["checks"]
    sharp = checks.get("sharpness") or {}
    overlap = checks.get("initial_orthogonality") or {}
    curvature = checks.get("curvature_coupling") or {}
    forecast = checks.get("quartic_forecast") or {}
    collapse = forecast.get("collapse_step")
    collapse_text = "none within search" if forecast and collapse is None else _fmt(collapse)
    if forecast.get("collapse_is_extrapolation"):
        collapse_text += " (extrapolated past the horizon)"
    rows = [
        ("model", str(report["model"]["source"]) if report.get("model") else "n/a"),
        ("dataset", str(report["dataset"]["path"]) if report.get("dataset") else "n/a"),
        ("policy", str(report["policy"]["name"]) if report.get("policy") else "n/a"),
        ("subspace rank k", _fmt(sharp.get("k"))),
        ("overlap_ratio", _fmt(overlap.get("overlap_ratio"))),
        ("gamma_hat", _fmt(curvature.get("gamma_hat"))),
        ("delta_u at planned steps", _fmt(forecast.get("delta_u_at_planned_steps"))),
        ("planned steps", _fmt(forecast.get("planned_steps"))),
        ("collapse step", collapse_text),
    ]
    for finding in report.get("findings", []):
        if finding["status"] != "pass":
            rows.append((f"{finding['status']}: {finding['rule']}", finding["message"]))
    attribution = report.get("attribution") or {}
    top = (attribution.get("records") or [])[:3]
    if top:
        listed = ", ".join(f"#{r['index']} ({r['drift_share']:.0%})" for r in top)
        rows.append(("riskiest records", f"{listed} of the forecast drift"))
    what_if = report.get("what_if")
    if what_if:
        after = what_if["after"]
        rows.append((
            f"without {len(what_if['dropped'])} riskiest",
            f"verdict {after['verdict']}, overlap_ratio {_fmt(after['overlap_ratio'])}, "
            f"collapse step {_fmt(after['collapse_step'])}",
        ))
    return rows


def _error_code(console, exc: BaseException, *, debug: bool, policy: str | None = None) -> ExitCode:
    """Print `exc` as one error line (a traceback too with --debug) and return its exit code."""
    if isinstance(exc, RiskgateError):
        if debug:
            traceback.print_exc()
        message = str(exc)
        problems = getattr(exc, "problems", None) or []
        if len(problems) > 1 and isinstance(exc, PolicyError) and policy is not None:
            message += f"; `riskgate policy validate {policy}` lists all {len(problems)} problems"
        if len(problems) > 1 and isinstance(exc, WaiverError):
            for problem in problems:
                console.error(one_line(problem))
        console.error(f"riskgate: error: {one_line(message)}")
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        console.error("riskgate: error: interrupted (SIGINT or SIGTERM); no report was written")
        return ExitCode.RUNTIME_ERROR
    if isinstance(exc, MemoryError):
        console.error("riskgate: error: out of memory; narrow --params, lower --max-safety-examples or set --max-memory")
        return ExitCode.RUNTIME_ERROR
    if debug:
        traceback.print_exc()
    console.error(one_line(
        f"riskgate: error: internal error ({type(exc).__name__}: {exc}); "
        "rerun with --debug and report the traceback"
    ))
    return ExitCode.RUNTIME_ERROR


@main.command("report")
@click.option("--from", "source", required=True, type=click.Path(path_type=Path), metavar="REPORT_JSON",
              help="The report.json that `riskgate check` wrote.")
@click.option("--format", "format_name", required=True, type=click.Choice(REPORT_FORMATS),
              help="Format to render: sarif (SARIF 2.1.0), junit (JUnit XML), github (workflow "
                   "commands that annotate a GitHub Actions run), or json, markdown, html.")
@click.option("--output", type=click.Path(path_type=Path), metavar="FILE",
              help="File to write, replaced atomically. Default: standard output.")
@click.option("--max-bytes", type=int, metavar="N",
              help="Markdown only: above N bytes of UTF-8, keep only the verdict, the failing and "
                   "warning findings and a pointer to the full report.")
@click.option("--full-report-location", metavar="TEXT",
              help="Markdown only: where the full report is, named in the shortened output. "
                   "Default: report.html and report.json in the report folder.")
def report_command(source: Path, format_name: str, output: Path | None, max_bytes: int | None,
                   full_report_location: str | None) -> None:
    """Render a report.json in another format, without loading the model.

    Exits 0 once the file is written, whatever the verdict: the gate's exit code comes from
    `riskgate check`. Exits 2 when the report.json is missing, invalid or of another
    schema_version, and 3 when the output file cannot be written.
    """
    from .console import Console

    console = Console()
    try:
        text = _render_report(source, format_name, max_bytes, full_report_location)
        if output is None:
            click.echo(text, nl=False)
        else:
            _write_output(output, text)
    except RiskgateError as exc:
        console.error(f"riskgate: error: {exc}")
        sys.exit(int(exc.exit_code))
    sys.exit(int(ExitCode.PASS))


def _render_report(source: Path, format_name: str, max_bytes: int | None, full_report_location: str | None) -> str:
    from .errors import UsageError
    from .report import RENDERERS
    from .report.markdown import DEFAULT_FULL_REPORT_LOCATION, MarkdownRenderer
    from .report.reading import read_report

    markdown_only = [flag for flag, value in (("--max-bytes", max_bytes), ("--full-report-location", full_report_location))
                     if value is not None]
    if markdown_only and format_name != "markdown":
        raise UsageError(f"{markdown_only[0]}: applies to --format markdown only, not {format_name}")

    report = read_report(source)
    if format_name == "markdown":
        renderer = MarkdownRenderer(max_bytes, full_report_location or DEFAULT_FULL_REPORT_LOCATION)
    else:
        renderer = RENDERERS[format_name]
    try:
        return renderer.render(report)
    except (AttributeError, TypeError, KeyError, ValueError, IndexError) as error:
        # read_report checks the common structure; deeper edits still must not end in a traceback.
        raise InvalidInputError(
            f"{source}: unexpected report structure ({type(error).__name__}: {error}); "
            "render a report.json that `riskgate check` wrote, unedited"
        ) from None


def _write_output(output: Path, text: str) -> None:
    from .errors import EnvironmentFailure
    from .report.writer import write_atomically

    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(output, text)
    except OSError as error:
        reason = error.strerror or str(error)
        raise EnvironmentFailure(f"{output}: cannot write the report ({reason}); choose a writable --output") from error


@main.group("subspace")
def subspace_group() -> None:
    """Save the safety side of a check once per base model, for reuse by `check --subspace`."""


@subspace_group.command("build", epilog=EXIT_CODES_HELP)
@click.option("--model", "model", required=True, metavar="MODEL",
              help="Local model folder, a hub id in the local Hugging Face cache, or a .gguf file.")
@click.option("--output", "output", required=True, type=click.Path(path_type=Path), metavar="FILE",
              help="Subspace file to write (safetensors).")
@click.option("--safety-data", type=click.Path(path_type=Path), metavar="DATA",
              help="Harmful requests with refusals; replaces the built-in safety set.")
@click.option("--safety-format", type=click.Choice(DATASET_FORMATS), help="Format of --safety-data.")
@click.option("--safety-columns", multiple=True, metavar="FIELD=COLUMN",
              help="Map a format field to a column of --safety-data. Repeatable.")
@click.option("--params", "params", multiple=True, metavar="PATTERN",
              help="Glob (or `re:` regex) over parameter names to analyse. Repeatable.")
@click.option("--policy", default="default", show_default=True, metavar="POLICY",
              help="Policy whose rank rule the summary shows; checks apply their own.")
@click.option("--lora-config", type=click.Path(path_type=Path), metavar="FILE",
              help="Build the subspace of this LoRA adapter's factors, as `check --lora-config` analyses them.")
@click.option("--max-safety-examples", type=int, default=128, show_default=True)
@click.option("--max-finetune-examples", type=int, default=64, show_default=True,
              help="Fine-tune rows the later checks will add; the memory plan leaves room for them.")
@click.option("--max-seq-len", type=int, default=256, show_default=True)
@click.option("--max-memory", metavar="SIZE", help="Memory limit, e.g. 16G. Default: 80% of the available memory.")
@click.option("--spill-dir", type=click.Path(path_type=Path), metavar="DIR",
              help="Folder for exact gradient rows that do not fit --max-memory (the streamed path).")
@placement_options
@click.option("--device", default="auto", show_default=True, metavar="DEVICE",
              help="auto (CUDA when available, else CPU), cpu, cuda, cuda:N or mps.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float64", "bfloat16", "float16"]))
@click.option("--allow-pickle", is_flag=True, help="Allow pickle checkpoints, loaded with weights_only=True.")
@click.option("--trust-remote-code", is_flag=True, help="Allow checkpoints that ship their own model code.")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def subspace_build(**options) -> None:
    """Run the safety pass once and write it to --output."""
    from .api import build_subspace
    from .budget import Budget
    from .console import Console

    console = Console(verbosity=0)
    _interrupt_on_sigterm()
    try:
        budget = Budget(max_safety_examples=options["max_safety_examples"],
                        max_finetune_examples=options["max_finetune_examples"], max_seq_len=options["max_seq_len"])
        with console.progress() as progress:
            summary = build_subspace(
                options["model"], options["output"], safety_data=options["safety_data"],
                safety_format=options["safety_format"],
                safety_columns=_parse_columns(options["safety_columns"], "--safety-columns"),
                params=list(options["params"]) or None, policy=options["policy"], budget=budget,
                seed=options["seed"], dtype=options["dtype"], max_memory=options["max_memory"],
                allow_pickle=options["allow_pickle"], trust_remote_code=options["trust_remote_code"],
                device=options["device"], lora_config=options["lora_config"], spill_dir=options["spill_dir"],
                device_map=options["device_map"], offload_dir=options["offload_dir"], progress=progress,
            )
    except click.BadParameter:
        raise
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - every error ends as one line
        sys.exit(int(_error_code(console, exc, debug=options["debug"], policy=options["policy"])))
    width = f", sketch width {summary.sketch_width:,}" if summary.sketch_width else ""
    console.result(
        f"{summary.path}: {summary.sequences} safety sequences over {summary.parameters:,} parameters "
        f"({summary.path_kind}{width}), k = {summary.k}, lambda_1 = {summary.eigenvalues[0]:.4g}, "
        f"{summary.file_bytes / 2**20:.1f} MiB in {summary.elapsed_s:.0f} s"
    )
    sys.exit(int(ExitCode.PASS))


@main.group("policy")
def policy_group() -> None:
    """Validate and inspect policy files without running a check."""


@policy_group.command("validate")
@click.argument("spec", metavar="FILE")
def policy_validate(spec: str) -> None:
    """Check a policy file (or preset name) and every policy it extends.

    Exits 0 and prints "FILE: valid policy NAME", or exits 2 and lists every problem, one
    per line on stderr, followed by a count.
    """
    from .console import Console
    from .errors import PolicyError
    from .policy import load_policy

    console = Console()
    try:
        policy = load_policy(spec)
    except PolicyError as exc:
        problems = exc.problems or [str(exc)]
        if len(problems) == 1:
            console.error(f"riskgate: error: {one_line(problems[0])}")
            sys.exit(int(exc.exit_code))
        for problem in problems:
            console.error(one_line(problem))
        console.error(f"riskgate: error: {spec}: invalid policy: {len(problems)} problems")
        sys.exit(int(exc.exit_code))
    console.result(f"{spec}: valid policy {policy.name}")
    sys.exit(int(ExitCode.PASS))


@policy_group.command("show")
@click.argument("spec", metavar="NAME_OR_FILE")
def policy_show(spec: str) -> None:
    """Print a policy as YAML with its extends chain merged in.

    The output loads as a policy file on its own. Exits 2 when the policy is invalid.
    """
    from .console import Console
    from .errors import PolicyError
    from .policy import load_policy
    from .policy.show import policy_yaml

    try:
        policy = load_policy(spec)
    except PolicyError as exc:
        Console().error(f"riskgate: error: {exc}")
        sys.exit(int(exc.exit_code))
    click.echo(policy_yaml(policy), nl=False)
    sys.exit(int(ExitCode.PASS))


def run() -> None:
    """Console entry point: `main` with click's usage errors printed on one line (exit 2)."""
    try:
        code = main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("riskgate: error: aborted", err=True)
        sys.exit(int(ExitCode.RUNTIME_ERROR))
    except click.ClickException as exc:
        hint = ""
        if exc.ctx is not None:
            hint = f" (see `{exc.ctx.command_path} --help`)"
        click.echo(one_line(f"riskgate: error: {exc.format_message()}{hint}"), err=True)
        sys.exit(int(ExitCode.INVALID_INPUT))
    sys.exit(code or 0)


if __name__ == "__main__":  # pragma: no cover
    run()
