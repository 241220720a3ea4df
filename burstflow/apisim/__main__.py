"""`python -m burstflow.apisim`: run the local Kubernetes API endpoint until interrupted, for the demo and by hand."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import yaml

from .server import ApiSim


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m burstflow.apisim", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8001, help="port to listen on; 0 picks a free one (default 8001)")
    p.add_argument("--kubeconfig", help="write a kubeconfig pointing at the server to this path")
    p.add_argument("--history", type=int, default=1000, help="changes kept for watches and continue tokens")
    p.add_argument("--namespace", action="append", default=[], help="extra namespace to create (repeatable)")
    p.add_argument("--crd", action="append", default=[], help="CustomResourceDefinition YAML file to install "
                                                                "at start (repeatable)")
    return p


async def _serve(args: argparse.Namespace) -> None:
    sim = ApiSim(host=args.host, port=args.port, history=args.history, namespaces=tuple(args.namespace))
    for path in args.crd:
        with open(path) as f:
            for doc in yaml.load_all(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
                if doc:
                    sim.put_object("customresourcedefinitions", doc)
    await sim.start()
    if args.kubeconfig:
        sim.write_kubeconfig(args.kubeconfig)
    print(f"apisim listening on {sim.url}" + (f"; kubeconfig at {args.kubeconfig}" if args.kubeconfig else ""),
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
