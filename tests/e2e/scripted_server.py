"""scripted_server.py PORT MODE [--transcript F] - a raw SMTP server that
misbehaves on purpose, one behaviour per MODE, for the client-robustness
cases of SMTP-CLIENT-CASES.md. Plaintext only (the client runs --tls none
or opportunistic). Every byte the client sends is appended to the transcript.

Modes: multiline-greeting, slow-greeting, greeting-554, close-after-greeting,
ehlo-502, split-replies, bare-code, data-451, data-554, 421-mid-pipeline,
close-after-first (answers one transaction then closes while idle),
rcpt-452, multiline-everywhere."""
import argparse
import asyncio
import time


def parse():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("mode")
    ap.add_argument("--transcript")
    return ap.parse_args()


ARGS = parse()
MODE = ARGS.mode
LOCK = asyncio.Lock()


def log(data):
    if ARGS.transcript:
        with open(ARGS.transcript, "ab") as f:
            f.write(data + b"|SEGMENT|\n")  # segment boundaries show pipelining


async def send(w, text):
    data = text.encode()
    if MODE == "split-replies":
        for i in range(len(data)):  # one byte per segment
            w.write(data[i:i + 1])
            await w.drain()
            await asyncio.sleep(0.001)
    else:
        w.write(data)
        await w.drain()


def ml(code, lines):
    if MODE != "multiline-everywhere":
        return "%s %s\r\n" % (code, lines[0])
    out = ["%s-%s\r\n" % (code, l) for l in lines[:-1]]
    return "".join(out) + "%s %s\r\n" % (code, lines[-1])


async def session(r, w):
    if MODE == "slow-greeting":
        await asyncio.sleep(5)
    if MODE == "greeting-554":
        await send(w, "554 5.7.1 no service for you\r\n")
        w.close()
        return
    if MODE == "close-after-greeting":
        await send(w, "220 mx.test\r\n")
        w.close()
        return
    if MODE in ("multiline-greeting", "multiline-everywhere"):
        await send(w, "220-mx.test first line\r\n220-second line\r\n220 ready\r\n")
    else:
        await send(w, "220 mx.test ESMTP\r\n")
    in_data = False
    done = 0
    buf = b""
    while True:
        chunk = await r.read(65536)
        if not chunk:
            break
        log(chunk)
        buf += chunk
        while True:
            if in_data:
                end = buf.find(b"\r\n.\r\n")
                if end < 0:
                    break
                buf = buf[end + 5:]
                in_data = False
                done += 1
                if MODE == "data-451":
                    await send(w, ml(451, ["4.3.0 queue trouble", "try later"]))
                elif MODE == "data-554":
                    await send(w, ml(554, ["5.6.0 content rejected", "bye"]))
                elif MODE == "bare-code":
                    await send(w, "250\r\n")
                else:
                    await send(w, ml(250, ["2.0.0 queued", "as X%d" % done]))
                if MODE == "close-after-first":
                    w.close()  # idle close right after a successful transaction
                    return
                continue
            nl = buf.find(b"\r\n")
            if nl < 0:
                break
            line, buf = buf[:nl].decode("utf-8", "replace"), buf[nl + 2:]
            verb = line[:4].upper()
            if verb == "EHLO":
                if MODE == "ehlo-502":
                    await send(w, "502 5.5.1 EHLO not implemented\r\n")
                else:
                    await send(w, "250-mx.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 1000000\r\n")
            elif verb == "HELO":
                await send(w, "250 mx.test\r\n")
            elif verb == "MAIL":
                await send(w, "250\r\n" if MODE == "bare-code" else ml(250, ["2.1.0 sender ok"]))
            elif verb == "RCPT":
                if MODE == "421-mid-pipeline":
                    await send(w, "421 4.7.0 closing now\r\n")
                    w.close()
                    return
                if MODE == "rcpt-452":
                    await send(w, "452 4.5.3 too many recipients\r\n")
                else:
                    await send(w, "250\r\n" if MODE == "bare-code" else ml(250, ["2.1.5 rcpt ok"]))
            elif verb == "DATA":
                if MODE == "rcpt-452":
                    await send(w, "554 5.5.1 no valid recipients\r\n")
                else:
                    await send(w, "354 go ahead\r\n")
                    in_data = True
            elif verb == "RSET" or verb == "NOOP":
                await send(w, "250 2.0.0 ok\r\n")
            elif verb == "QUIT":
                await send(w, "221 2.0.0 bye\r\n")
                w.close()
                return
            else:
                await send(w, "500 5.5.2 what?\r\n")
    w.close()


async def main():
    srv = await asyncio.start_server(session, "127.0.0.1", ARGS.port)
    async with srv:
        await srv.serve_forever()


asyncio.run(main())
