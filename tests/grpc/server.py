#!/usr/bin/env python3
"""A gRPC test server with generic handlers (raw bytes, no generated code).

Binds 127.0.0.1 on the port given (0: any), prints `PORT <n>` on stdout once
serving, and serves until stdin closes (the test that started it went away) or
it is killed. Service `test.Echo`:

- Unary: echoes the request; initial metadata `x-served-by`, trailing metadata
  echoing the request's `x-trace` and `trace-bin` (binary) values.
- ServerStream: the request is a decimal count n; answers n messages `msg-<i>`.
- ClientStream: answers `<count>:<total bytes>` of the messages it got.
- Bidi: echoes every message as it comes, prefixed `echo:`.
- Tagged: a bidi echo that prefixes every message with the server's name and
  `:`, so a client can tell which backend answered each one.
- Fail: aborts NOT_FOUND before any message (a trailers-only response) with
  trailing metadata `detail-bin`.
- Slow: sleeps the request's decimal milliseconds, then echoes.
- Unavailable: aborts UNAVAILABLE (trailers-only).
"""

import sys
import threading
import time
from concurrent import futures

import grpc

NAME = sys.argv[2] if len(sys.argv) > 2 else "py-grpc"


def unary(request, context):
    md = dict(context.invocation_metadata())
    context.send_initial_metadata((("x-served-by", NAME),))
    trailing = []
    if "x-trace" in md:
        trailing.append(("x-trace", md["x-trace"]))
    if "trace-bin" in md:
        trailing.append(("trace-bin", md["trace-bin"]))
    context.set_trailing_metadata(tuple(trailing))
    return request


def server_stream(request, context):
    n = int(request.decode())
    for i in range(n):
        yield b"msg-%d" % i


def client_stream(request_iterator, context):
    count = 0
    total = 0
    for msg in request_iterator:
        count += 1
        total += len(msg)
    return b"%d:%d" % (count, total)


def bidi(request_iterator, context):
    for msg in request_iterator:
        yield b"echo:" + msg


def tagged(request_iterator, context):
    for msg in request_iterator:
        yield NAME.encode() + b":" + msg


def fail(request, context):
    context.set_trailing_metadata((("detail-bin", b"\x00\x01\xfe\xff"),))
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + request.decode())


def unavailable(request, context):
    context.abort(grpc.StatusCode.UNAVAILABLE, "shedding load")


def slow(request, context):
    time.sleep(int(request.decode()) / 1000.0)
    return request


HANDLERS = {
    "Unary": grpc.unary_unary_rpc_method_handler(unary),
    "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
    "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
    "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    "Tagged": grpc.stream_stream_rpc_method_handler(tagged),
    "Fail": grpc.unary_unary_rpc_method_handler(fail),
    "Slow": grpc.unary_unary_rpc_method_handler(slow),
    "Unavailable": grpc.unary_unary_rpc_method_handler(unavailable),
}


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Echo", HANDLERS),)
    )
    bound = server.add_insecure_port("127.0.0.1:%d" % port)
    server.start()
    print("PORT %d" % bound, flush=True)
    # Ends with the test: its end of our stdin closes.
    threading.Thread(target=lambda: (sys.stdin.read(), server.stop(0)), daemon=True).start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
