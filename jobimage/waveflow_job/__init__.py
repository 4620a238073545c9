"""WaveFlow's processing job: the three stages, the audio analysis and the contract."""

import os as _os

# A job is one process per stem and makes no BLAS call worth a thread, but OpenBLAS (under
# numpy) starts one per CPU at import, and each spins ~0.1 s of CPU before it sleeps: at every
# job's start-up that is CPU quota a small pod pays and time taken from the decoding threads
# (`waveflow-job waveform` on a 1-s file: 0.36 -> 0.29 s wall, 0.35 -> 0.28 s CPU). Set before
# numpy is imported (every entry point imports this package first); a value the caller set
# is kept.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
