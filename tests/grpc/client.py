#!/usr/bin/env python3
"""A gRPC test client with generic stubs (raw bytes): runs every kind of call
against `host:port` (argv[1]) and prints one `ok <case>` line per case that
passed; exits non-zero at the first case that did not, saying why.
"""

import sys

import grpc

TARGET = sys.argv[1]
BIN = b"\x00\x01\x02\xfe\xff"


def check(case, cond, detail):
    if not cond:
        print("FAIL %s: %s" % (case, detail), flush=True)
        sys.exit(1)
    print("ok %s" % case, flush=True)


def main():
    with grpc.insecure_channel(TARGET) as ch:
        unary = ch.unary_unary("/test.Echo/Unary")
        resp, call = unary.with_call(
            b"hello", metadata=(("x-trace", "t-1"), ("trace-bin", BIN)), timeout=10
        )
        initial = dict(call.initial_metadata())
        trailing = dict(call.trailing_metadata())
        check("unary", resp == b"hello", resp)
        check("initial-metadata", initial.get("x-served-by", "").startswith("py-grpc"), initial)
        check("trailing-metadata", trailing.get("x-trace") == "t-1", trailing)
        check("binary-metadata", trailing.get("trace-bin") == BIN, trailing)
        check("status-ok", call.code() == grpc.StatusCode.OK, call.code())

        stream = ch.unary_stream("/test.Echo/ServerStream")
        got = list(stream(b"50", timeout=10))
        check("server-streaming", got == [b"msg-%d" % i for i in range(50)], got[:3])

        client = ch.stream_unary("/test.Echo/ClientStream")
        msgs = [b"x" * (i + 1) for i in range(40)]
        resp = client(iter(msgs), timeout=10)
        check("client-streaming", resp == b"40:%d" % sum(len(m) for m in msgs), resp)

        bidi = ch.stream_stream("/test.Echo/Bidi")
        msgs = [b"m%d" % i for i in range(30)]
        got = list(bidi(iter(msgs), timeout=10))
        check("bidi-streaming", got == [b"echo:" + m for m in msgs], got[:3])

        # A big message each way: the stream windows, not 64 KiB, bound it.
        big = b"b" * (4 << 20)
        resp = ch.unary_unary("/test.Echo/Unary")(big, timeout=20)
        check("large-message", resp == big, len(resp))

        fail = ch.unary_unary("/test.Echo/Fail")
        try:
            fail(b"thing-7", timeout=10)
            check("trailers-only-error", False, "no error raised")
        except grpc.RpcError as err:
            trailing = dict(err.trailing_metadata() or ())
            check(
                "trailers-only-error",
                err.code() == grpc.StatusCode.NOT_FOUND
                and err.details() == "no such thing: thing-7",
                (err.code(), err.details()),
            )
            check("error-binary-metadata", trailing.get("detail-bin") == b"\x00\x01\xfe\xff", trailing)

        slow = ch.unary_unary("/test.Echo/Slow")
        try:
            slow(b"3000", timeout=0.3)
            check("deadline", False, "no error raised")
        except grpc.RpcError as err:
            check("deadline", err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err.code())
        resp = slow(b"10", timeout=5)
        check("within-deadline", resp == b"10", resp)


if __name__ == "__main__":
    main()
