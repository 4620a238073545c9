"""Jobs as Kubernetes Jobs: the WaveflowQueue spec, the Job builder, the launcher, kopf."""
