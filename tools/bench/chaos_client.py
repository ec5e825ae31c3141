#!/usr/bin/python3
"""The chaos client: a steady mixed load on Anima's gateways that accounts for every request.

Lanes: unary and streamed chat over WebSocket and over HTTP (/v1/chat/completions), consciousness
queries, a flood of low-priority module frames (word_count) and self-coding jobs (the demo task,
whose first attempt fails its tests). Each request gets an id and a deadline; the client counts
its terminal answers (a response or an error: exactly one is right, none by the deadline or two
is a failure). A connection that closes with requests unanswered is a failure unless its gateway
was killed (SIGKILL) at that moment, which --events (the cluster's event log) tells. Every job
must end with a result and its progress `seq` must run 1, 2, 3 ... with none missing or repeated,
across connections lost and `self_coding_watch` from `after_seq` on the other gateway.

Writes the report (text, one table per part) to stdout and a JSON summary to --json; exits 1 when
anything was unanswered, answered twice, lost or out of order, else 0. Needs python3-websockets.
"""
import argparse
import asyncio
import itertools
import json
import random
import sys
import time

import websockets

CHAT_TIMEOUT_MS = 10000
GRACE_S = 5.0  # past a request's own deadline, before it counts as unanswered
RECOVERY_GRACE_S = 5.0  # a service back this close to the end of the load need not serve again
DEMO_TESTS = (
    "from solution import word_count\n\n\n"
    "def test_counts_words_case_insensitively():\n"
    "    assert word_count(\"The cat and the hat.\") == {\"the\": 2, \"cat\": 1, \"and\": 1, \"hat\": 1}\n"
)
DEMO_TASK = ("Demo word_count: write a Python function word_count(text) in solution.py that "
             "returns a dict mapping each word, lower-cased, to the number of times it appears.")


def now():
    return time.time()


class Request:
    __slots__ = ("id", "lane", "gateway", "sent", "deadline", "answers", "lost", "ok", "code",
                 "latency")

    def __init__(self, rid, lane, gateway, timeout_s):
        self.id = rid
        self.lane = lane
        self.gateway = gateway
        self.sent = now()
        self.deadline = self.sent + timeout_s + GRACE_S
        self.answers = 0
        self.lost = None  # (time, why) when the connection went before an answer
        self.ok = False
        self.code = None
        self.latency = None

    def answer(self, ok, code):
        self.answers += 1
        if self.answers == 1:
            self.ok = ok
            self.code = code
            self.latency = now() - self.sent


class Job:
    def __init__(self, n):
        self.n = n
        self.job_id = None
        self.last_seq = 0
        self.events = 0
        self.gaps = 0
        self.repeats = 0
        self.watches = 0
        self.result = None  # status of the self_coding_result
        self.submit_error = None
        self.cut = False  # the submission's connection was cut by a fault before it was accepted
        self.cut_at = None
        self.cut_gateway = None
        self.cut_why = ""
        self.stages = []


class Client:
    def __init__(self, args):
        self.args = args
        self.ws_urls = args.ws.split(",")
        self.http_urls = args.http.split(",")
        self.requests = {}
        self.jobs = []
        self.stop = False
        self.counter = itertools.count(1)
        self.next_gateway = itertools.count()
        self.self_coding_seen = []  # times a self-coding frame arrived (for recovery times)
        self.samples = []

    # ---- bookkeeping
    def new_request(self, lane, gateway, timeout_s=CHAT_TIMEOUT_MS / 1000):
        rid = f"{lane}-{next(self.counter)}"
        r = Request(rid, lane, gateway, timeout_s)
        self.requests[rid] = r
        return r

    def pick_gateway(self):
        return next(self.next_gateway) % len(self.ws_urls)

    # ---- WebSocket lanes
    def frame_for(self, lane, rid):
        if lane in ("ws_chat", "ws_stream"):
            return {"type": "chat", "id": rid, "message": f"chaos {rid}",
                    "stream": lane == "ws_stream", "timeout_ms": CHAT_TIMEOUT_MS}
        if lane == "query":
            return {"type": "consciousness_query", "id": rid}
        return {"type": "word_count", "id": rid, "text": f"the quick brown fox {rid} jumps"}

    async def ws_lane(self, lane, rate, connections):
        if rate <= 0:
            return  # the lane is off
        await asyncio.gather(*(self.ws_connection(lane, rate / connections, k)
                               for k in range(connections)))

    async def ws_connection(self, lane, rate, k):
        interval = 1.0 / rate
        await asyncio.sleep(random.random() * interval)
        while not self.stop:
            gateway = self.pick_gateway()
            try:
                ws = await websockets.connect(self.ws_urls[gateway], open_timeout=3,
                                              close_timeout=2, max_size=None, ping_interval=None)
            except (OSError, asyncio.TimeoutError, websockets.WebSocketException):
                await asyncio.sleep(0.2)
                continue
            pending = {}
            reader = asyncio.create_task(self.ws_reader(ws, pending))
            try:
                next_send = now()
                while not self.stop and not reader.done():
                    r = self.new_request(lane, gateway)
                    pending[r.id] = r
                    await ws.send(json.dumps(self.frame_for(lane, r.id)))
                    next_send += interval
                    await asyncio.sleep(max(0, next_send - now()))
                if self.stop:
                    # Let the answers in flight arrive before closing.
                    end = now() + CHAT_TIMEOUT_MS / 1000 + GRACE_S
                    while pending and now() < end and not reader.done():
                        await asyncio.sleep(0.05)
                    await ws.close()
            except websockets.ConnectionClosed:
                pass
            await asyncio.gather(reader, return_exceptions=True)
            why = f"close {ws.close_code}" if ws.close_code is not None else "connection lost"
            t = now()
            for r in pending.values():
                if r.answers == 0 and r.lost is None:
                    r.lost = (t, why)
            if not self.stop:
                await asyncio.sleep(0.1 + random.random() * 0.2)

    async def ws_reader(self, ws, pending):
        try:
            async for text in ws:
                frame = json.loads(text)
                rid = frame.get("id")
                kind = frame.get("type")
                if rid is None or kind in ("chat_delta", "welcome", "subscribed"):
                    continue
                r = self.requests.get(rid)
                if r is None:
                    continue
                if kind == "error":
                    r.answer(False, frame.get("code"))
                else:
                    r.answer(True, kind)
                pending.pop(rid, None)
        except websockets.ConnectionClosed:
            pass

    # ---- HTTP lanes
    async def http_lane(self, lane, rate):
        if rate <= 0:
            return  # the lane is off
        interval = 1.0 / rate
        tasks = set()
        next_send = now() + random.random() * interval
        while not self.stop:
            await asyncio.sleep(max(0, next_send - now()))
            next_send += interval
            t = asyncio.create_task(self.http_request(lane))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def http_request(self, lane):
        stream = lane == "http_stream"
        for attempt in range(len(self.http_urls)):
            gateway = self.pick_gateway()
            host, port = self.http_urls[gateway].split("//")[1].rstrip("/").split(":")
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, int(port)), 3)
                break
            except (OSError, asyncio.TimeoutError):
                continue  # that gateway is down: the next one
        else:
            return  # no gateway took the connection: not a request
        r = self.new_request(lane, gateway)
        body = json.dumps({"model": "auto", "stream": stream,
                           "messages": [{"role": "user", "content": f"chaos {r.id}"}]}).encode()
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n").encode()
        data = b""
        try:
            writer.write(head + body)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(-1), CHAT_TIMEOUT_MS / 1000 + GRACE_S)
        except asyncio.TimeoutError:
            pass  # unanswered: seen at the end
        except OSError:
            pass
        finally:
            writer.close()
        status, complete, error_event = parse_http(data, stream)
        if status is not None and complete:
            ok = status == 200 and not error_event
            r.answer(ok, "200" if ok else (f"{status} error event" if error_event else str(status)))
        elif r.answers == 0 and now() < r.deadline:
            r.lost = (now(), "connection closed mid-answer" if data else "connection closed")

    # ---- self-coding jobs
    async def job_lane(self, every_s):
        tasks = []
        await asyncio.sleep(random.random() * every_s)
        while not self.stop:
            job = Job(len(self.jobs) + 1)
            self.jobs.append(job)
            tasks.append(asyncio.create_task(self.run_job(job)))
            await asyncio.sleep(every_s)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def run_job(self, job):
        deadline = now() + self.args.job_deadline
        while job.result is None and now() < deadline:
            gateway = self.pick_gateway()
            try:
                ws = await websockets.connect(self.ws_urls[gateway], open_timeout=3,
                                              close_timeout=2, max_size=None, ping_interval=None)
            except (OSError, asyncio.TimeoutError, websockets.WebSocketException):
                await asyncio.sleep(0.3)
                continue
            try:
                if job.job_id is None:
                    await ws.send(json.dumps({
                        "type": "self_coding_request", "id": f"job-{job.n}", "task": DEMO_TASK,
                        "language": "python", "tests": DEMO_TESTS, "max_attempts": 3}))
                else:
                    job.watches += 1
                    await ws.send(json.dumps({"type": "self_coding_watch", "id": f"watch-{job.n}",
                                              "job_id": job.job_id, "after_seq": job.last_seq}))
                outcome = await self.follow_job(ws, job, deadline)
            except websockets.ConnectionClosed:
                outcome = "again"
            finally:
                await ws.close()
            if job.job_id is None:
                if outcome == "again":
                    # The submission's connection went before the job was accepted: a kill?
                    job.cut = True
                    job.cut_at = now()
                    job.cut_gateway = gateway
                    job.cut_why = f"close {ws.close_code}" if ws.close_code else "connection lost"
                return
            if outcome != "again":
                return
            await asyncio.sleep(0.3 + random.random() * 0.3)

    async def follow_job(self, ws, job, deadline):
        """Reads one connection's frames of the job: "done", "again" (watch it again, elsewhere),
        "refused" (an error before the job was accepted), "error" or "timeout"."""
        while now() < deadline:
            try:
                text = await asyncio.wait_for(ws.recv(), max(0.1, deadline - now()))
            except asyncio.TimeoutError:
                return "timeout"
            except websockets.ConnectionClosed:
                return "again"
            frame = json.loads(text)
            kind = frame.get("type")
            if kind in ("welcome", "consciousness_state", "subscribed"):
                continue
            self.self_coding_seen.append(now())
            if kind == "self_coding_accepted":
                job.job_id = frame["job_id"]
            elif kind == "self_coding_progress":
                seq = frame.get("seq", 0)
                job.events += 1
                job.stages.append(frame.get("stage"))
                if seq == job.last_seq + 1:
                    job.last_seq = seq
                elif seq <= job.last_seq:
                    job.repeats += 1
                else:
                    job.gaps += seq - job.last_seq - 1
                    job.last_seq = seq
            elif kind == "self_coding_result":
                job.result = frame.get("status")
                job.reason = frame.get("reason", "")
                return "done"
            elif kind == "error":
                code = frame.get("code")
                if job.job_id is None:
                    job.submit_error = code  # answered: the job was not taken
                    return "refused"
                if code in ("unavailable", "deadline_exceeded", "overloaded"):
                    return "again"
                job.watch_error = code
                return "error"
        return "timeout"

    # ---- sampling (for the soak)
    async def sampler(self, every_s, path):
        seen = 0
        with open(path, "a") as out:
            while not self.stop:
                await asyncio.sleep(every_s)
                done = [r for r in self.requests.values() if r.latency is not None]
                window = done[seen:]
                seen = len(done)
                chats = sorted(r.latency for r in window if r.ok and "chat" in r.lane
                               or r.ok and r.lane.startswith("http"))
                line = {"t": round(now(), 1), "answered": len(window),
                        "ok": sum(1 for r in window if r.ok),
                        "p50_ms": pct(chats, 0.5), "p99_ms": pct(chats, 0.99)}
                out.write(json.dumps(line) + "\n")
                out.flush()

    async def run(self):
        a = self.args
        lanes = [
            self.ws_lane("ws_chat", a.chat_rate, 2),
            self.ws_lane("ws_stream", a.stream_rate, 2),
            self.ws_lane("query", a.query_rate, 1),
            self.ws_lane("flood", a.flood_rate, 2),
            self.http_lane("http_chat", a.http_rate),
            self.http_lane("http_stream", a.http_stream_rate),
        ]
        if a.job_every > 0:
            lanes.append(self.job_lane(a.job_every))
        if a.samples:
            lanes.append(self.sampler(a.sample_every, a.samples))
        tasks = [asyncio.create_task(x) for x in lanes]
        await asyncio.sleep(a.duration)
        self.stop = True
        await asyncio.gather(*tasks)


def pct(sorted_values, q):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return round(sorted_values[i] * 1000, 1)


def parse_http(data, stream):
    """(status, complete, error_event) of a whole HTTP/1.1 response read until the close."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None, False, False
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return None, False, False
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        decoded, complete = b"", False
        while True:
            size_line, sep, rest = body.partition(b"\r\n")
            if not sep:
                break
            try:
                size = int(size_line.split(b";")[0], 16)
            except ValueError:
                break
            if size == 0:
                complete = True
                break
            if len(rest) < size + 2:
                break
            decoded += rest[:size]
            body = rest[size + 2:]
        body = decoded
    elif "content-length" in headers:
        complete = len(body) >= int(headers["content-length"])
    else:
        complete = True  # ended by the close
    error_event = False
    if stream and status == 200:
        complete = complete and b"data: [DONE]" in body
        error_event = b'data: {"error"' in body
        if error_event:
            complete = True
    return status, complete, error_event


def load_events(path):
    events = []
    if not path:
        return events
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    events.append((int(parts[0]) / 1000, parts[1], parts[2], parts[3:]))
    except FileNotFoundError:
        pass
    return events


def killed_near(events, gateway, t, why="", window=2.0, drain_window=15.0):
    """Whether a request cut at `t` on anima-gateway-<gateway> was cut by a fault we made.

    Either the gateway was SIGKILLed within `window` s before `t` (or just after), or the
    connection closed with 1001 within `drain_window` s of a SIGTERM: frames the gateway had read
    are all answered before its 1001, so one without an answer was never read (the protocol's
    "send it again"), which only a drain may cause.
    """
    name = f"anima-gateway-{gateway}"
    for at, kind, svc, _ in events:
        if svc != name:
            continue
        if kind == "kill" and -0.5 <= t - at <= window:
            return True
        if kind == "term" and why == "close 1001" and -0.5 <= t - at <= drain_window:
            return True
    return False


def report(client, events):
    lanes = {}
    failures = []
    for r in client.requests.values():
        lane = lanes.setdefault(r.lane, {"sent": 0, "ok": 0, "errors": {}, "cut_by_kill": 0,
                                         "lost": 0, "unanswered": 0, "twice": 0, "lat": []})
        lane["sent"] += 1
        if r.answers > 1:
            lane["twice"] += 1
            failures.append(f"{r.id}: answered {r.answers} times")
        if r.answers >= 1:
            if r.ok:
                lane["ok"] += 1
                lane["lat"].append(r.latency)
            else:
                lane["errors"][r.code] = lane["errors"].get(r.code, 0) + 1
            if r.latency > r.deadline - r.sent:
                lane["unanswered"] += 1
                failures.append(f"{r.id}: answered after its deadline ({r.latency:.1f} s)")
        elif r.lost is not None:
            if killed_near(events, r.gateway, r.lost[0], r.lost[1]):
                lane["cut_by_kill"] += 1
            else:
                lane["lost"] += 1
                failures.append(f"{r.id} on gateway {r.gateway}: {r.lost[1]} with no answer")
        else:
            lane["unanswered"] += 1
            failures.append(f"{r.id} on gateway {r.gateway}: no answer")
    out = []
    out.append(f"{'lane':<12} {'sent':>6} {'ok':>6} {'ok %':>6} {'cut':>4} {'lost':>4} "
               f"{'unans.':>6} {'twice':>5} {'p50 ms':>7} {'p99 ms':>7}  errors")
    summary = {"lanes": {}, "jobs": {}, "faults": []}
    for name in sorted(lanes):
        l = lanes[name]
        lat = sorted(l["lat"])
        answered = l["sent"] - l["cut_by_kill"]
        share = 100.0 * l["ok"] / answered if answered else 0
        errors = ", ".join(f"{k} {v}" for k, v in sorted(l["errors"].items(), key=lambda x: -x[1]))
        out.append(f"{name:<12} {l['sent']:>6} {l['ok']:>6} {share:>6.1f} {l['cut_by_kill']:>4} "
                   f"{l['lost']:>4} {l['unanswered']:>6} {l['twice']:>5} "
                   f"{pct(lat, 0.5) or 0:>7} {pct(lat, 0.99) or 0:>7}  {errors}")
        summary["lanes"][name] = {k: v for k, v in l.items() if k != "lat"}
        summary["lanes"][name]["ok_share"] = round(share, 2)
        summary["lanes"][name]["p99_ms"] = pct(lat, 0.99)
    # Jobs.
    jobs = client.jobs
    submitted = len(jobs)
    cut = [j for j in jobs if j.cut]
    for j in cut:
        if not killed_near(events, j.cut_gateway, j.cut_at, j.cut_why):
            failures.append(f"job {j.n}: its submission's connection was lost, no kill near")
    refused = [j for j in jobs if j.job_id is None and j.submit_error]
    accepted = [j for j in jobs if j.job_id is not None]
    unfinished = [j for j in accepted if j.result is None]
    by_status = {}
    for j in accepted:
        if j.result is not None:
            by_status[j.result] = by_status.get(j.result, 0) + 1
    gaps = sum(j.gaps for j in accepted)
    repeats = sum(j.repeats for j in accepted)
    watches = sum(j.watches for j in accepted)
    for j in unfinished:
        failures.append(f"job {j.n} ({j.job_id}): no result by its deadline, last seq "
                        f"{j.last_seq}, watched again {j.watches} times")
    for j in accepted:
        if j.gaps or j.repeats:
            failures.append(f"job {j.n} ({j.job_id}): {j.gaps} events missing, "
                            f"{j.repeats} repeated")
        if getattr(j, "watch_error", None):
            failures.append(f"job {j.n} ({j.job_id}): watch answered {j.watch_error}")
    reasons = {}
    for j in accepted:
        if j.result == "failed":
            reasons[j.reason] = reasons.get(j.reason, 0) + 1
    out.append("")
    out.append(f"jobs: {submitted} submitted, {len(accepted)} accepted "
               f"({', '.join(f'{k} {v}' for k, v in sorted(by_status.items())) or 'none ended'}), "
               f"{len(unfinished)} unfinished, {len(refused)} refused "
               f"({', '.join(sorted(set(j.submit_error for j in refused)))}), {len(cut)} "
               f"submissions cut by a kill; events {sum(j.events for j in accepted)}, "
               f"missing {gaps}, repeated {repeats}; watched again {watches} times")
    for reason, count in reasons.items():
        out.append(f"  failed x{count}: {reason}")
    summary["jobs"] = {"submitted": submitted, "accepted": len(accepted), "results": by_status,
                       "unfinished": len(unfinished), "refused": len(refused), "cut": len(cut),
                       "missing_events": gaps, "repeated_events": repeats, "rewatches": watches}
    # Faults: down time and recovery (restart to the first success that depends on it).
    oks = sorted((r.sent + r.latency, r.sent, r.lane, r.gateway) for r in client.requests.values()
                 if r.ok)
    seen = sorted(client.self_coding_seen)
    last_sent = max((r.sent for r in client.requests.values()), default=0)
    faults = []
    for i, (at, kind, svc, extra) in enumerate(events):
        if kind not in ("kill", "term"):
            continue
        exit_status = next((e[3][1] for e in events[i:] if e[1] == "exit" and e[2] == svc
                            and len(e[3]) > 1), "?")
        ready = next((e[0] for e in events[i:] if e[1] == "ready" and e[2] == svc), None)
        recovery = None
        if ready is not None:
            if svc == "anima-self-coding":
                recovery = next((t - ready for t in seen if t >= ready), None)
            else:
                lanes_of = {"anima-word-count": ("flood",)}.get(svc)
                gateway = int(svc[-1]) if svc.startswith("anima-gateway-") else None
                for done, sent, lane, gw in oks:
                    if done < ready or sent < at:
                        continue
                    if lanes_of and lane not in lanes_of:
                        continue
                    if not lanes_of and lane in ("flood", "query"):
                        continue
                    if gateway is not None and gw != gateway:
                        continue
                    recovery = done - ready
                    break
        down = ready - at if ready is not None else None
        faults.append((svc, kind, at, exit_status, down, recovery))
        summary["faults"].append({"service": svc, "signal": "SIGKILL" if kind == "kill" else "SIGTERM",
                                  "exit": exit_status, "down_ms": ms(down),
                                  "recovery_ms": ms(recovery)})
        if kind == "term" and exit_status != "0":
            failures.append(f"{svc}: exited {exit_status} after SIGTERM (expected 0)")
        # A service back within the last seconds of the load may have had no request left to
        # serve: that is the schedule's end, not a failure.
        if ready is not None and recovery is None and ready < last_sent - RECOVERY_GRACE_S:
            failures.append(f"{svc}: no success after its restart")
    if faults:
        start = events[0][0] if events else 0
        out.append("")
        out.append(f"{'fault':<20} {'signal':<8} {'at s':>6} {'exit':>5} {'down ms':>8} "
                   f"{'recovery ms':>11}")
        for svc, kind, at, status, down, recovery in faults:
            out.append(f"{svc:<20} {'SIGKILL' if kind == 'kill' else 'SIGTERM':<8} "
                       f"{at - start:>6.1f} {status:>5} {ms(down) or '-':>8} "
                       f"{ms(recovery) if recovery is not None else '-':>11}")
    summary["failures"] = failures
    return "\n".join(out), summary, failures


def ms(seconds):
    return None if seconds is None else int(seconds * 1000)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ws", required=True, help="gateway WebSocket URLs, comma-separated")
    p.add_argument("--http", required=True, help="gateway HTTP base URLs, comma-separated")
    p.add_argument("--duration", type=float, default=60, help="seconds of load")
    p.add_argument("--events", default="", help="the cluster's event log (kills, restarts)")
    p.add_argument("--json", default="", help="write the summary here")
    p.add_argument("--samples", default="", help="append a line per --sample-every s here")
    p.add_argument("--sample-every", type=float, default=60)
    p.add_argument("--chat-rate", type=float, default=10, help="WebSocket unary chats per second")
    p.add_argument("--stream-rate", type=float, default=5, help="WebSocket streamed chats per s")
    p.add_argument("--http-rate", type=float, default=5, help="HTTP unary chats per second")
    p.add_argument("--http-stream-rate", type=float, default=3, help="HTTP streamed chats per s")
    p.add_argument("--query-rate", type=float, default=2, help="consciousness queries per second")
    p.add_argument("--flood-rate", type=float, default=20, help="word_count frames per second")
    p.add_argument("--job-every", type=float, default=4, help="a self-coding job every N s (0: none)")
    p.add_argument("--job-deadline", type=float, default=120, help="seconds a job may take")
    args = p.parse_args()
    client = Client(args)
    asyncio.run(client.run())
    text, summary, failures = report(client, load_events(args.events))
    print(text)
    if failures:
        print(f"\nFAILED: {len(failures)} problems")
        for f in failures[:50]:
            print(f"  {f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
