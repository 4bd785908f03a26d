#!/usr/bin/env python3
"""A gRPC test server with generic handlers (raw bytes, no generated code).

Binds 127.0.0.1 on the port given (0: any), prints `PORT <n>` on stdout once
serving, and serves until stdin closes (the test that started it went away) or
it is killed. Usage: server.py [PORT [NAME]] [--fail-percent N] [--fail-code CODE]
[--no-health]. Service `test.Echo`:

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
- Flaky: server streaming; sends one message `<name>:<i>`, then ends with
  `--fail-code` (default UNAVAILABLE) for `--fail-percent` of the calls (spread
  evenly: of every 100 calls exactly N fail), else OK: a failure in the
  trailers after a message, under HTTP 200.
- SetHealth: the request `service=STATUS` sets what the health service says
  of `service` (`""` is the whole server): SERVING, NOT_SERVING, UNKNOWN.

Service `grpc.health.v1.Health` (unless `--no-health`, then calls to it fail
UNIMPLEMENTED): Check answers the status set for the request's service
(SERVING for `""` at start), NOT_FOUND for a service never set, as the gRPC
health protocol says. Its messages are real protobuf (built from a descriptor
with the `protobuf` package, not by hand), so the gateway's own encoding is
checked against another implementation.
"""

import argparse

import sys
import threading
import time
from concurrent import futures

import grpc

ARGS = argparse.ArgumentParser()
ARGS.add_argument("port", nargs="?", type=int, default=0)
ARGS.add_argument("name", nargs="?", default="py-grpc")
ARGS.add_argument("--fail-percent", type=int, default=0)
ARGS.add_argument("--fail-code", default="UNAVAILABLE")
ARGS.add_argument("--no-health", action="store_true")
OPTS = ARGS.parse_args()
NAME = OPTS.name

FLAKY_LOCK = threading.Lock()
FLAKY_CALLS = [0]
HEALTH = {"": 1}
SERVING = {"UNKNOWN": 0, "SERVING": 1, "NOT_SERVING": 2}


def health_messages():
    """HealthCheckRequest and HealthCheckResponse classes from a descriptor."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fd = descriptor_pb2.FileDescriptorProto()
    fd.name = "sluicegate_test_health.proto"
    fd.package = "grpc.health.v1"
    fd.syntax = "proto3"
    req = fd.message_type.add()
    req.name = "HealthCheckRequest"
    f = req.field.add()
    f.name, f.number = "service", 1
    f.type = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    f.label = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    resp = fd.message_type.add()
    resp.name = "HealthCheckResponse"
    enum = resp.enum_type.add()
    enum.name = "ServingStatus"
    for name, number in (("UNKNOWN", 0), ("SERVING", 1), ("NOT_SERVING", 2), ("SERVICE_UNKNOWN", 3)):
        v = enum.value.add()
        v.name, v.number = name, number
    f = resp.field.add()
    f.name, f.number = "status", 1
    f.type = descriptor_pb2.FieldDescriptorProto.TYPE_ENUM
    f.type_name = ".grpc.health.v1.HealthCheckResponse.ServingStatus"
    f.label = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    get = message_factory.GetMessageClass
    return (
        get(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckRequest")),
        get(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckResponse")),
    )


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


def flaky(request, context):
    with FLAKY_LOCK:
        i = FLAKY_CALLS[0]
        FLAKY_CALLS[0] += 1
    yield b"%s:%d" % (NAME.encode(), i)
    n = OPTS.fail_percent
    if (i + 1) * n // 100 > i * n // 100:
        context.abort(getattr(grpc.StatusCode, OPTS.fail_code), "flaky call %d" % i)


def set_health(request, context):
    service, _, status = request.decode().partition("=")
    HEALTH[service] = SERVING[status]
    return b"ok"


def health_check(request, context):
    service = request.service
    if service not in HEALTH:
        context.abort(grpc.StatusCode.NOT_FOUND, "unknown service %r" % service)
    return HEALTH_RESPONSE(status=HEALTH[service])


HANDLERS = {
    "Unary": grpc.unary_unary_rpc_method_handler(unary),
    "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
    "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
    "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    "Tagged": grpc.stream_stream_rpc_method_handler(tagged),
    "Fail": grpc.unary_unary_rpc_method_handler(fail),
    "Slow": grpc.unary_unary_rpc_method_handler(slow),
    "Unavailable": grpc.unary_unary_rpc_method_handler(unavailable),
    "Flaky": grpc.unary_stream_rpc_method_handler(flaky),
    "SetHealth": grpc.unary_unary_rpc_method_handler(set_health),
}


def main():
    global HEALTH_RESPONSE
    port = OPTS.port
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    handlers = [grpc.method_handlers_generic_handler("test.Echo", HANDLERS)]
    if not OPTS.no_health:
        request_class, HEALTH_RESPONSE = health_messages()
        handlers.append(
            grpc.method_handlers_generic_handler(
                "grpc.health.v1.Health",
                {
                    "Check": grpc.unary_unary_rpc_method_handler(
                        health_check,
                        request_deserializer=request_class.FromString,
                        response_serializer=HEALTH_RESPONSE.SerializeToString,
                    )
                },
            )
        )
    server.add_generic_rpc_handlers(tuple(handlers))
    bound = server.add_insecure_port("127.0.0.1:%d" % port)
    server.start()
    print("PORT %d" % bound, flush=True)
    # Ends with the test: its end of our stdin closes.
    threading.Thread(target=lambda: (sys.stdin.read(), server.stop(0)), daemon=True).start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
