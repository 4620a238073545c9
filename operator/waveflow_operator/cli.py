"""``waveflow``: the runner's command line.

    waveflow local          run jobs as child processes against SQS/S3/webhook from the env
    waveflow operator       the Kubernetes operator (kopf), one Job per message
    waveflow dev-backend    the reference backend (CONTRACT.md §2, §7) for demos and tests
    waveflow demo           the whole pipeline on this machine, no AWS, no cluster
    waveflow health         can SQS, S3, the webhook and the Kubernetes API be reached?

Logging is configured here and nowhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from waveflow_operator.local.config import ConfigError, RunnerConfig, local_environment_help

__all__ = ["main", "run_local"]

log = logging.getLogger("waveflow_operator")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``waveflow`` script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as error:
        print(f"waveflow: configuration error: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="waveflow", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    local = commands.add_parser(
        "local", help="run jobs as local child processes",
        description="Receive from SQS_QUEUE_URL and run each message as `waveflow-job run` in a "
                    "child process. Settings come from the environment (CONTRACT.md §4 plus "
                    "WAVEFLOW_*; see waveflow_operator.local.config). SIGINT/SIGTERM stops "
                    "receiving and lets running jobs finish within WAVEFLOW_GRACE_SECONDS; a "
                    "second signal kills them. Unfinished messages go back to the queue.")
    local.epilog = _LOCAL_ENVIRONMENT + local_environment_help()
    local.formatter_class = argparse.RawDescriptionHelpFormatter
    local.add_argument("--metrics-port", type=int, help="override WAVEFLOW_METRICS_PORT")
    local.add_argument("--health-port", type=int, help="override WAVEFLOW_HEALTH_PORT")
    local.set_defaults(handler=_local)

    operator = commands.add_parser("operator", help="run the Kubernetes operator (kopf)")
    scope = operator.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[],
                       help="watch this namespace (repeatable)")
    scope.add_argument("--all-namespaces", "-A", action="store_true",
                       help="watch every namespace")
    operator.add_argument("--liveness", metavar="URL",
                          help="kopf's liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    operator.add_argument("--metrics-port", type=int, default=9090,
                          help="Prometheus metrics port (0: off)")
    operator.add_argument("--listen-address",
                          default=os.environ.get("WAVEFLOW_LISTEN_ADDRESS") or "0.0.0.0",
                          help="where the metrics server listens (default: "
                               "$WAVEFLOW_LISTEN_ADDRESS, else 0.0.0.0, every interface of the "
                               "pod; the liveness endpoint's address is part of --liveness)")
    operator.add_argument("--standalone", action="store_true",
                          help="no peering (a single replica)")
    operator.set_defaults(handler=_operator)

    backend = commands.add_parser(
        "dev-backend", help="the reference backend for demos and tests",
        description="Serve the backend's side of the contract: /upload-complete, "
                    "/webhook/hash-check, /webhook/completion, /state. Messages go to "
                    "SQS_QUEUE_URL; WEBHOOK_SECRET enables signature checks.")
    backend.add_argument("--host", default="127.0.0.1")
    backend.add_argument("--port", type=int, default=3000)
    backend.add_argument("--num-peaks", type=int, default=1024)
    backend.set_defaults(handler=_dev_backend)

    demo = commands.add_parser("demo", help="the whole pipeline on this machine")
    demo.add_argument("--output", type=Path, default=Path("demo-output"),
                      help="where the table, PNGs and index.html go (default demo-output/)")
    demo.add_argument("--keep-running", action="store_true",
                      help="leave the stack up afterwards and print its endpoints")
    demo.add_argument("--players", type=Path, metavar="NODE_MODULES",
                      help="the node_modules with peaks.js and wavesurfer.js for index.html "
                           "(default: operator/waveflow_dev/players/node_modules; `make players`)")
    demo.add_argument("--webhook-url", metavar="URL",
                      help="with --keep-running: afterwards, send the runner's webhooks to this "
                           "backend (signed with $WEBHOOK_SECRET when set)")
    demo.set_defaults(handler=_demo)

    health = commands.add_parser("health", help="check SQS, S3, the webhook and Kubernetes")
    health.set_defaults(handler=_health)
    return parser


_LOCAL_ENVIRONMENT = """environment:
  SQS_QUEUE_URL, S3_BUCKET_NAME, WEBHOOK_URL   required
  AWS_REGION, AWS_ENDPOINT_URL, WEBHOOK_SECRET, UPLOAD_PREFIXES, LOG_LEVEL
  SQS_DLQ_URL                          default: the queue's RedrivePolicy target
  WAVEFLOW_GRACE_SECONDS=25            on SIGTERM, before running jobs are killed
  WAVEFLOW_SCRATCH_ROOT=$TMPDIR/waveflow-local
  WAVEFLOW_JOB_COMMAND                 default: waveflow-job run (tests: a stand-in)
  WAVEFLOW_METRICS_PORT=9090, WAVEFLOW_HEALTH_PORT=8080   0 turns either off
  WAVEFLOW_LISTEN_ADDRESS=127.0.0.1    where both listen (0.0.0.0 in a container)
the queue's numbers (default, range; from waveflow_operator.runner.spec):
"""


def _configure_logging(level: str) -> None:
    from waveflow_job import logs

    logs.configure(level)


# --------------------------------------------------------------------------- local


def _local(args: argparse.Namespace) -> int:
    config = RunnerConfig.from_env()
    if args.metrics_port is not None or args.health_port is not None:
        from dataclasses import replace

        config = replace(config,
                         metrics_port=config.metrics_port if args.metrics_port is None
                         else args.metrics_port,
                         health_port=config.health_port if args.health_port is None
                         else args.health_port)
    _configure_logging(config.queue.log_level)
    return asyncio.run(run_local(config))


async def run_local(config: RunnerConfig) -> int:
    """Run until SIGINT/SIGTERM; a second signal kills running jobs. Returns the exit code."""
    from waveflow_operator.health import serve_liveness
    from waveflow_operator.local.launcher import local_dispatcher
    from waveflow_operator.metrics import Metrics, serve

    metrics = Metrics()
    dispatcher = local_dispatcher(config, metrics=metrics)
    servers = []
    try:
        if config.metrics_port:
            servers.append(serve(metrics, config.metrics_port, host=config.listen_address))
        if config.health_port:
            servers.append(serve_liveness(config.health_port, dispatcher.alive,
                                          host=config.listen_address))
    except OSError as error:
        raise ConfigError(f"cannot listen for metrics/liveness (WAVEFLOW_LISTEN_ADDRESS="
                          f"{config.listen_address}, WAVEFLOW_METRICS_PORT="
                          f"{config.metrics_port}, WAVEFLOW_HEALTH_PORT={config.health_port}): "
                          f"{error}") from error
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    hurry_tasks: list[asyncio.Task[None]] = []

    def on_signal(signum: int) -> None:
        if not stopping.is_set():
            log.info("%s: no new messages; running jobs get %gs to finish (signal again to "
                     "kill them)", signal.Signals(signum).name, config.grace_seconds)
            stopping.set()
        else:
            log.warning("%s again: killing running jobs", signal.Signals(signum).name)
            hurry_tasks.append(loop.create_task(dispatcher.hurry()))

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    await dispatcher.start()
    log.info("waveflow local: receiving from %s (at most %d jobs at once)",
             config.queue.queue_url, config.queue.max_in_flight)
    await stopping.wait()
    unfinished = await dispatcher.stop(config.grace_seconds)
    for task in hurry_tasks:
        await task
    for server in servers:
        server.shutdown()
        server.server_close()
    log.info("stopped; %d unfinished message(s) returned to the queue", len(unfinished))
    return 0


# --------------------------------------------------------------------------- others


def _operator(args: argparse.Namespace) -> int:
    from waveflow_operator.k8s import handlers  # kopf loads only here

    _configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    result = handlers.run_operator(
        namespaces=list(args.namespace), all_namespaces=args.all_namespaces,
        liveness=args.liveness, metrics_port=args.metrics_port, standalone=args.standalone,
        listen_address=args.listen_address)
    return int(result or 0)


def _dev_backend(args: argparse.Namespace) -> int:
    backend = _dev_tool("dev-backend", "backend")
    _configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    return int(backend.serve_from_env(host=args.host, port=args.port, num_peaks=args.num_peaks))


def _demo(args: argparse.Namespace) -> int:
    demo = _dev_tool("demo", "demo")
    return int(demo.run(args.output, keep_running=args.keep_running,
                        webhook_url=args.webhook_url, players=args.players))


def _dev_tool(command: str, module: str) -> Any:
    """A module of the dev package (``waveflow_dev``), which neither image installs."""
    try:
        return importlib.import_module(f"waveflow_dev.{module}")
    except ModuleNotFoundError as error:
        raise SystemExit(
            f"waveflow {command} needs the dev package and its extra, which are not installed "
            f"here (missing: {error.name}): from a checkout, pip install -e '.[demo]' "
            "(or run `make demo`)") from error


def _health(args: argparse.Namespace) -> int:
    from waveflow_operator.health import kubernetes_checks, run_checks

    try:
        config = RunnerConfig.from_env()
    except ConfigError as error:
        checks = kubernetes_checks()
        if not checks:
            raise
        # In the operator's pod the queues live in WaveflowQueue resources, not the environment.
        print(f"SKIP  queues     {error}; each WaveflowQueue's status shows its own")
    else:
        checks = run_checks(config.queue)
    for check in checks:
        print(check.line())
    failed = [c for c in checks if not c.ok]
    if failed:
        print(f"\n{len(failed)} check(s) failed: {', '.join(c.name for c in failed)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
