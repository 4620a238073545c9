"""``python -m waveflow_job.contract [DIR]``: write the JSON Schemas (``make schemas``)."""

import sys
from pathlib import Path

from waveflow_job.contract.schemas import write_schemas

for written in write_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas")):
    print(written)
