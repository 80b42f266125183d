"""TCP proxy for benches/compare.sh that paces each connection's
upstream->client bytes to RATE bytes/s from the first byte on.

    python3 compare-pace.py LISTEN_PORT UPSTREAM_PORT RATE

nginx's limit_rate lets the first socket-buffer's worth of each response
(MiBs on loopback) out at full speed, so a 1 MiB range is never slowed
down; this proxy has no such burst: a token bucket of one 64 KiB piece,
at most one piece of credit, none accumulates while a connection
is idle. Prints "ready" once
listening. 127.0.0.1 only.
"""
import asyncio
import sys

PIECE = 65536


async def pipe(reader, writer, rate):
    loop = asyncio.get_running_loop()
    t_next = 0.0
    try:
        while True:
            data = await reader.read(PIECE)
            if not data:
                break
            if rate:
                now = loop.time()
                # at most one piece of credit: no burst after idle time,
                # but scheduling overhead does not eat into the rate
                t_next = max(t_next, now - PIECE / rate) + len(data) / rate
                # send once the piece's time slot has come (its end)
                delay = t_next - now
                if delay > 0:
                    await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def handle(client_r, client_w, upstream_port, rate):
    try:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", upstream_port, limit=1 << 20)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(pipe(client_r, up_w, 0), pipe(up_r, client_w, rate))


async def main():
    listen, upstream, rate = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, upstream, rate), "127.0.0.1", listen, limit=1 << 20
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
