#!/usr/bin/env python3
"""One long bidirectional gRPC stream (`/test.Echo/Tagged`) through
`host:port` (argv[1]) for argv[2] seconds, a message every argv[3]
milliseconds. Prints `STARTED <backend>` once the first answer came (the
backend's name is the prefix of every answer), then at the end `sent <n>`,
`got <n>` and `backends <names>`; exits non-zero, saying why in a `FAIL` line,
if an answer is missing, out of order, or came from another backend.
"""

import sys
import threading
import time

import grpc

TARGET = sys.argv[1]
SECONDS = float(sys.argv[2])
INTERVAL = float(sys.argv[3]) / 1000.0


def main():
    first = threading.Event()
    sent = [0]

    def messages():
        # Bounded: the stream lasts SECONDS, one message per INTERVAL.
        end = time.monotonic() + SECONDS
        i = 0
        while time.monotonic() < end:
            yield b"m%d" % i
            i += 1
            sent[0] = i
            if i == 1:
                first.wait(10)
            time.sleep(INTERVAL)

    with grpc.insecure_channel(TARGET) as ch:
        call = ch.stream_stream("/test.Echo/Tagged")(messages(), timeout=SECONDS + 60)
        got = 0
        backends = set()
        for answer in call:
            backend, _, msg = answer.partition(b":")
            backends.add(backend.decode())
            if msg != b"m%d" % got:
                print("FAIL answer %d was %r" % (got, answer), flush=True)
                sys.exit(1)
            if got == 0:
                print("STARTED %s" % backend.decode(), flush=True)
                first.set()
            got += 1
        print("sent %d" % sent[0], flush=True)
        print("got %d" % got, flush=True)
        print("backends %s" % ",".join(sorted(backends)), flush=True)
        if got != sent[0]:
            print("FAIL %d sent, %d answered" % (sent[0], got), flush=True)
            sys.exit(1)
        if len(backends) != 1:
            print("FAIL answers from %s" % sorted(backends), flush=True)
            sys.exit(1)


if __name__ == "__main__":
    main()
