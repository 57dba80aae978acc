"""``python -m fakes.weaviate --port HTTP --grpc-port GRPC``: serve the fake until killed."""

import argparse
import threading

from .server import FakeWeaviate

parser = argparse.ArgumentParser(description="Serve a fake Weaviate.")
parser.add_argument("--port", type=int, required=True, help="REST port")
parser.add_argument("--grpc-port", type=int, required=True)
args = parser.parse_args()
FakeWeaviate(http_port=args.port, grpc_port=args.grpc_port).start()
threading.Event().wait()
