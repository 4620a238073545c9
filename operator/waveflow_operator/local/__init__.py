"""Jobs as local child processes: `waveflow local` and `waveflow demo`."""
