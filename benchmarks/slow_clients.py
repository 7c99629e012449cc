"""Slow and greedy clients against the real service, while an ordinary client goes on working.

    python -m benchmarks.slow_clients [--connections 200] [--attack-s 25] [--quiet-s 10] [--after-s 10]
                                      [--attacker-addresses 1] [--attacker-nice 0]
                                      [--json reports/reliability/slow_clients.json]

Starts ``python -m service`` on loopback (default settings, the shipped model). An ordinary client
(source address 127.0.0.2) sends a ``/parse?faces=whole`` of a 512 px JPEG every 200 ms: alone for
``--quiet-s`` right before each attack (its quiet figures, taken next to the attack so that a shared
machine's load drifts into both alike), then during the attack. Each attack is ``--connections`` sockets from
127.0.0.3 (and up, with ``--attacker-addresses``), run in a process of their own, each re-opened
1 s after the server cuts it (the flood re-opens at once). On loopback the attacker's CPU is the
server's: ``--attacker-nice 19`` lowers its priority, the nearest a 2-core machine comes to an
attacker on a machine of its own (the server still pays for every connection it refuses):

- ``slow_body``: a ``/parse`` upload's headers, then its body at 1 byte/s;
- ``slow_headers``: the headers at 1 byte/s;
- ``idle``: connect, send nothing;
- ``flood``: one client opening connections as fast as it can, sending nothing.

Reported per attack: the ordinary client's answers, success rate and p50/p99 against quiet; every
attacking connection's end (the status it was answered with, ``closed`` without an answer, or
``open at end``) and after how long; and the server's RSS, threads and open descriptors before,
at the worst moment during, and 10 s after the attack, with when each was back to its level.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.servers import running, service_spec
from benchmarks.soak import REPO_ROOT, face_photos, rss_mb, server_errors_logged, thread_count
from service.settings import Settings

KINDS = ("slow_body", "slow_headers", "idle", "flood")
ORDINARY_ADDRESS = "127.0.0.2"
SLACK_S = 1.0  # a cut this late after its deadline still counts as on time (timer and scheduling slack)


def attacker_address(i: int) -> str:
    return f"127.0.0.{3 + i}"


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_cpu(pid: int, run) -> tuple:
    """``run()``'s result and the server's CPU use meanwhile, in cores (1.0 = one core busy all along)."""
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    result = run()
    return result, round((cpu_seconds(pid) - cpu0) / (time.monotonic() - t0), 2)


def multipart_upload(port: int, photo: bytes) -> tuple[bytes, bytes]:
    """(head, body) of a ``/parse`` upload of ``photo``, as a browser would send it."""
    boundary = "slowclientsboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"face.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + photo + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /parse?faces=whole HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: slow-client\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head, body


# --- the attackers (their own process) ------------------------------------------------------------------


@dataclass
class Cut:
    """How one attacking connection ended: ``answer`` is a status code, closed, reset, refused or open at end."""

    answer: str
    after_s: float


async def trickle(writer: asyncio.StreamWriter, data: bytes, every_s: float = 1.0) -> None:
    for i in range(len(data)):
        writer.write(data[i:i + 1])
        await writer.drain()
        await asyncio.sleep(every_s)


async def send_as(kind: str, writer: asyncio.StreamWriter, upload: tuple[bytes, bytes]) -> None:
    head, body = upload
    if kind == "slow_body":
        writer.write(head)
        await trickle(writer, body)
    elif kind == "slow_headers":
        await trickle(writer, head)
    await asyncio.Event().wait()  # idle and flood send nothing; the others wait once all is sent


async def one_connection(kind: str, port: int, source: str, upload: tuple[bytes, bytes],
                         stop: asyncio.Event) -> Cut:
    start = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), 10)
    except (OSError, TimeoutError) as exc:
        return Cut(f"refused ({type(exc).__name__})", time.monotonic() - start)
    reading = asyncio.ensure_future(reader.read(64))  # the status line, or b"" when closed unanswered
    sending = asyncio.ensure_future(send_as(kind, writer, upload))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    elapsed = time.monotonic() - start
    if reading.done():
        try:
            first = reading.result()
            answer = first.split(b" ", 2)[1].decode() if first.startswith(b"HTTP/") else "closed"
        except ConnectionError:
            answer = "reset"
    else:
        answer = "open at end"
    for task in (reading, sending, stopping):
        task.cancel()
    writer.close()
    return Cut(answer, elapsed)


async def attack_slot(kind: str, port: int, source: str, upload, stop: asyncio.Event, cuts: list[Cut]) -> None:
    pause_s = 0.0 if kind == "flood" else 1.0
    while not stop.is_set():
        cuts.append(await one_connection(kind, port, source, upload, stop))
        if pause_s and not stop.is_set():
            await asyncio.sleep(pause_s)


async def attack(kind: str, port: int, connections: int, addresses: int, seconds: float,
                 upload: tuple[bytes, bytes]) -> list[Cut]:
    stop, cuts = asyncio.Event(), []
    slots = [asyncio.ensure_future(attack_slot(kind, port, attacker_address(i % addresses), upload, stop, cuts))
             for i in range(connections)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*slots)
    return cuts


def attack_process(kind: str, port: int, connections: int, addresses: int, seconds: float,
                   upload: tuple[bytes, bytes], niceness: int, out: multiprocessing.Queue) -> None:
    os.nice(niceness)
    cuts = asyncio.run(attack(kind, port, connections, addresses, seconds, upload))
    out.put([asdict(c) for c in cuts])


def deadlines(settings: Settings) -> dict[str, float]:
    """The latest moment, after it opens, each kind of attacking connection may still be open."""
    head = settings.header_timeout_s  # at 1 byte/s the minimum rate earns no extra time
    return {"slow_body": max(settings.body_timeout_s, head),  # the rest of a refused body is held to the head's
            "slow_headers": head, "idle": settings.keep_alive_timeout_s, "flood": settings.keep_alive_timeout_s}


def summarize_cuts(cuts: list[dict], deadline_s: float, seconds: float) -> dict:
    by_answer: dict[str, list[float]] = defaultdict(list)
    for cut in cuts:
        by_answer[cut["answer"]].append(cut["after_s"])
    late = [c for c in cuts if c["after_s"] > deadline_s + SLACK_S]
    return {"connections": len(cuts), "per_s": round(len(cuts) / seconds, 1), "deadline_s": deadline_s,
            "late": len(late),
            "answers": {answer: {"n": len(t), "median_s": round(statistics.median(t), 2), "max_s": round(max(t), 2)}
                        for answer, t in sorted(by_answer.items())}}


# --- the ordinary client and the server's resources -------------------------------------------------------


async def ordinary_client(base_url: str, photo: bytes, seconds: float, every_s: float = 0.2) -> list[tuple[str, float]]:
    """A ``/parse`` every ``every_s`` (on schedule, whether or not the last one has answered)."""
    transport = httpx.AsyncHTTPTransport(local_address=ORDINARY_ADDRESS)
    async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=60) as client:
        async def one() -> tuple[str, float]:
            start = time.perf_counter()
            try:
                r = await client.post("/parse", params={"faces": "whole"},
                                      files={"image": ("face.jpg", photo, "image/jpeg")})
                status = str(r.status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            return status, time.perf_counter() - start

        tasks, t0 = [], time.perf_counter()
        for i in range(int(seconds / every_s)):
            await asyncio.sleep(max(0.0, t0 + i * every_s - time.perf_counter()))
            tasks.append(asyncio.ensure_future(one()))
        return list(await asyncio.gather(*tasks))


def latency_stats(results: list[tuple[str, float]]) -> dict:
    ok = np.array([s for status, s in results if status == "200"]) * 1000
    return {"sent": len(results), "answers": dict(Counter(status for status, _ in results)),
            "success_rate": round(len(ok) / len(results), 4) if results else None,
            "p50_ms": round(float(np.percentile(ok, 50)), 1) if len(ok) else None,
            "p99_ms": round(float(np.percentile(ok, 99)), 1) if len(ok) else None}


def rejections(base_url: str) -> Counter[str]:
    """The service's ``faceparse_rejected_total`` by reason."""
    text = httpx.get(base_url + "/metrics", timeout=10).text
    return Counter({sample.labels["reason"]: sample.value for family in text_string_to_metric_families(text)
                    for sample in family.samples if sample.name == "faceparse_rejected_total"})


def resources(pid: int) -> dict:
    return {"rss_mb": round(rss_mb(pid), 1), "threads": thread_count(pid), "fds": open_fds(pid)}


def recovery(pid: int, before: dict, seconds: float, every_s: float = 0.5) -> tuple[dict, dict]:
    """Sample for ``seconds`` after an attack: (the last sample, when each figure was first back to its level)."""
    back: dict[str, float | None] = {"rss_mb": None, "threads": None, "fds": None}
    start, now = time.monotonic(), resources(pid)
    while time.monotonic() - start < seconds:
        now = resources(pid)
        at = round(time.monotonic() - start, 1)
        for key, level in (("rss_mb", before["rss_mb"] * 1.05), ("threads", before["threads"]),
                           ("fds", before["fds"])):
            if back[key] is None and now[key] <= level:
                back[key] = at
        time.sleep(every_s)
    return now, back


def run_attack(kind: str, server, photo: bytes, upload, args, settings: Settings) -> dict:
    quiet_runs, quiet_cpu = with_cpu(server.pid, lambda: asyncio.run(
        ordinary_client(server.base_url, photo, args.quiet_s)))
    quiet = latency_stats(quiet_runs) | {"server_cpu_cores": quiet_cpu}
    time.sleep(1.0)
    before, refused_before = resources(server.pid), rejections(server.base_url)
    queue: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
    attacker = multiprocessing.get_context("spawn").Process(
        target=attack_process, args=(kind, server.port, args.connections, args.attacker_addresses, args.attack_s,
                                     upload, args.attacker_nice, queue))
    attacker.start()
    time.sleep(2.0)  # let the attack build up before the ordinary client starts
    attacker_cpu0, attack_t0 = cpu_seconds(attacker.pid), time.monotonic()
    worst = dict(before)

    async def measure() -> list[tuple[str, float]]:
        client = asyncio.ensure_future(ordinary_client(server.base_url, photo, args.attack_s - 3.0))
        while not client.done():
            now = resources(server.pid)
            worst.update({k: max(worst[k], now[k]) for k in now})
            await asyncio.sleep(0.5)
        return client.result()

    ordinary, attacked_cpu = with_cpu(server.pid, lambda: asyncio.run(measure()))
    attacker_cpu = round((cpu_seconds(attacker.pid) - attacker_cpu0) / (time.monotonic() - attack_t0), 2)
    cuts = queue.get(timeout=args.attack_s + 120)
    attacker.join(timeout=30)
    after, back = recovery(server.pid, before, args.after_s)
    refused = rejections(server.base_url) - refused_before
    return {"kind": kind, "quiet": quiet, "ordinary": latency_stats(ordinary) | {"server_cpu_cores": attacked_cpu},
            "attackers": summarize_cuts(cuts, deadlines(settings)[kind], args.attack_s) | {"cpu_cores": attacker_cpu},
            "server_refusals": {reason: int(n) for reason, n in sorted(refused.items())},
            "server": {"before": before, "worst_during": worst, "after": after, "back_after_s": back}}


def print_row(row: dict) -> None:
    quiet, o, a, s = row["quiet"], row["ordinary"], row["attackers"], row["server"]
    ratio = o["p99_ms"] / quiet["p99_ms"] if o["p99_ms"] and quiet["p99_ms"] else float("nan")
    answers = ", ".join(f"{k} x{v['n']} (median {v['median_s']} s, max {v['max_s']} s)"
                        for k, v in a["answers"].items())
    print(f"{row['kind']}: quiet {quiet['success_rate']:.1%} ok, p50 {quiet['p50_ms']} ms, p99 {quiet['p99_ms']} ms; "
          f"attacked {o['success_rate']:.1%} ok of {o['sent']} {o['answers']}, p50 {o['p50_ms']} ms, "
          f"p99 {o['p99_ms']} ms ({ratio:.2f}x quiet); server CPU {quiet['server_cpu_cores']} -> "
          f"{o['server_cpu_cores']} cores (attackers {a['cpu_cores']}); attackers {a['connections']} connections "
          f"({a['per_s']}/s), late {a['late']}: {answers}; server {s['before']} -> worst {s['worst_during']} -> "
          f"after {s['after']}, back after {s['back_after_s']}; refusals {row['server_refusals']}")


def markdown_table(rows: list[dict]) -> str:
    """The README's table: one line per attack."""
    lines = ["| attack | attacking connections | how they ended (median / max s) | ordinary client ok | p50 ms quiet "
             "-> attacked | p99 ms quiet -> attacked | server CPU cores | RSS MiB before / worst / +10 s | threads | "
             "fds |", "|" + "---|" * 10]
    for row in rows:
        quiet, o, a, s = row["quiet"], row["ordinary"], row["attackers"], row["server"]
        ended = ", ".join(f"{k} x{v['n']} ({v['median_s']:g} / {v['max_s']:g})" for k, v in a["answers"].items())
        before, worst, after = s["before"], s["worst_during"], s["after"]
        lines.append(
            f"| {row['kind'].replace('_', ' ')} | {a['connections']} ({a['per_s']:g}/s) | {ended} | "
            f"{o['answers'].get('200', 0)}/{o['sent']} | {quiet['p50_ms']:.0f} -> {o['p50_ms']:.0f} | "
            f"{quiet['p99_ms']:.0f} -> {o['p99_ms']:.0f} ({o['p99_ms'] / quiet['p99_ms']:.2f}x) | "
            f"{quiet['server_cpu_cores']:g} -> {o['server_cpu_cores']:g} | "
            f"{before['rss_mb']:.0f} / {worst['rss_mb']:.0f} / {after['rss_mb']:.0f} | "
            f"{before['threads']} / {worst['threads']} / {after['threads']} | "
            f"{before['fds']} / {worst['fds']} / {after['fds']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=200, help="attacking connections of each kind")
    ap.add_argument("--attack-s", type=float, default=25.0, help="length of each attack (> the 20 s deadlines)")
    ap.add_argument("--quiet-s", type=float, default=10.0, help="the ordinary client alone, before each attack")
    ap.add_argument("--after-s", type=float, default=10.0, help="watch the server this long after each attack")
    ap.add_argument("--attacker-addresses", type=int, default=1, help="loopback addresses the attack comes from")
    ap.add_argument("--attacker-nice", type=int, default=0,
                    help="niceness of the attacking process (19: it gets only what the server leaves)")
    ap.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    ap.add_argument("--model", default=str(REPO_ROOT / "models" / "face-parser"))
    ap.add_argument("--json", type=Path, default=REPO_ROOT / "reports" / "reliability" / "slow_clients.json")
    args = ap.parse_args(argv)
    photo = face_photos()["512.jpg"]
    settings = Settings(model_dir=args.model)  # the defaults the server runs with
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "service.log"
        with running(service_spec(args.model, log_level="warning"), log_path) as server:
            upload = multipart_upload(server.port, photo)
            asyncio.run(ordinary_client(server.base_url, photo, 2.0))  # warm up
            rows = []
            for kind in args.kinds:
                rows.append(run_attack(kind, server, photo, upload, args, settings))
                print_row(rows[-1])
            logged = server_errors_logged(log_path)
    result = {"connections": args.connections, "attack_s": args.attack_s,
              "attacker_addresses": args.attacker_addresses, "attacker_nice": args.attacker_nice, "attacks": rows,
              "server_errors_logged": logged}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(markdown_table(rows))
    print(f"server tracebacks/ERROR lines: {logged}\njson: {args.json}")
    return result


if __name__ == "__main__":
    main()
