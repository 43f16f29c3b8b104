"""The soak's verdict and report: Markdown tables on standard output and the same data as JSON."""
import json
import statistics

from stats import percentile

TRAFFIC = ["get", "upload", "connect", "websocket", "h2"]
RSS_TOLERANCE_KIB = 16 * 1024     # RSS growth allowed after warm-up: 16 MiB or 10 %, the larger
RSS_TOLERANCE_RATIO = 0.10


def median(values):
    return statistics.median(values) if values else None


def resource_trend(samples, warmup):
    """Medians of the first and last thirds of the samples taken under load after `warmup` s."""
    loaded = [s for s in samples if s.get("phase") == "load" and s["t"] >= warmup]
    third = max(1, len(loaded) // 3)
    first, last = loaded[:third], loaded[-third:]
    out = {"samples": len(loaded)}
    for key in ("rss_kib", "fds"):
        a, b = median([s[key] for s in first]), median([s[key] for s in last])
        out[key] = {"first_third_median": a, "last_third_median": b, "growth": None if a is None else b - a}
    return out


def per_minute_usage(samples):
    """minute -> (Moongate CPU % of one core over the minute, mean 1-minute load average)."""
    out = {}
    timed = [s for s in samples if "cpu_s" in s]
    for minute in sorted({int(s["t"] // 60) for s in timed}):
        inside = [s for s in timed if int(s["t"] // 60) == minute]
        before = [s for s in timed if s["t"] < minute * 60]
        first = before[-1] if before else inside[0]
        last = inside[-1]
        cpu = None if last["t"] <= first["t"] else 100 * (last["cpu_s"] - first["cpu_s"]) / (last["t"] - first["t"])
        out[minute] = (cpu, statistics.mean(s["load"] for s in inside))
    return out


def verdicts(result, fd_allowance):
    """(name, passed, detail) for every check the soak makes."""
    checks = []
    n = result["soak_failures"]
    checks.append(("no failure outside the injected ones", n == 0, f"{n} non-injected failures"))
    checks.append(("moongate alive to the end", result["alive_at_end"], ""))
    exit_status = result["exit_status"]
    checks.append(("moongate exits 0 on SIGTERM", exit_status == 0, f"exit status {exit_status}"))
    trend = result["trend"]["rss_kib"]
    if trend["growth"] is None:
        checks.append(("RSS flat after warm-up", False, "no samples after warm-up (run longer)"))
    else:
        limit = max(RSS_TOLERANCE_KIB, RSS_TOLERANCE_RATIO * trend["first_third_median"])
        checks.append(("RSS flat after warm-up", trend["growth"] <= limit,
                       f"{trend['growth']:+.0f} KiB (tolerance {limit:.0f} KiB: 16 MiB or 10 %)"))
    idle = result["idle"]
    growth = idle["end"]["fds"] - idle["start"]["fds"]
    checks.append(("open descriptors back to start when idle", growth <= fd_allowance,
                   f"{idle['start']['fds']} -> {idle['end']['fds']} (tolerance +{fd_allowance}: idle pooled "
                   f"upstream connections)"))
    checks.append(("no open tunnel left", result["open_tunnels_at_end"] == 0,
                   f"moongate_open_tunnels {result['open_tunnels_at_end']}"))
    faults = result["policy_faults"]
    checks.append(("no policy fault", faults == 0, f"moongate_policy_faults_total {faults}"))
    windows = sum(1 for e in result["events"] if e["event"] == "broken script written")
    checked = result.get("responses_checked_while_broken", 0)
    checks.append(("old generation served while a broken script was on disk", windows == 0 or checked > 0,
                   f"{windows} broken windows, {checked} responses checked in them"))
    return checks


def markdown(result):
    lines = []
    add = lines.append
    add(f"## Moongate soak: {result['minutes']:g} min, {'PASS' if result['passed'] else 'FAIL'}\n")
    add("| kind | operations | ok | injected failures | other failures | p50 ms | p99 ms |")
    add("|---|---:|---:|---:|---:|---:|---:|")
    for kind, row in result["kinds"].items():
        p50 = "" if row["p50_ms"] is None else f"{row['p50_ms']:.1f}"
        p99 = "" if row["p99_ms"] is None else f"{row['p99_ms']:.1f}"
        add(f"| {kind} | {row['operations']} | {row['ok']} | {row['injected']} | {row['other']} | {p50} | {p99} |")
    add("\n| kind | cause | injected | count | first |")
    add("|---|---|---|---:|---|")
    for f in result["failures"]:
        first = f["first"].replace("|", "\\|")
        add(f"| {f['kind']} | {f['cause']} | {'yes' if f['injected'] else '**no**'} | {f['count']} | {first} |")
    add("\np99 latency (ms) per minute of the run, with Moongate's CPU use and the machine's load average "
        "(other work on the machine shows up in latency):\n")
    add("| minute | " + " | ".join(TRAFFIC) + " | moongate CPU % | load avg |")
    add("|---:|" + "---:|" * (len(TRAFFIC) + 2))
    usage = per_minute_usage(result["samples"])
    for minute, row in sorted(result["p99_per_minute"].items(), key=lambda kv: int(kv[0])):
        cpu, load = usage.get(int(minute), (None, None))
        add(f"| {minute} | " + " | ".join("" if row.get(k) is None else f"{row[k]:.1f}" for k in TRAFFIC)
            + f" | {'' if cpu is None else f'{cpu:.0f}'} | {'' if load is None else f'{load:.2f}'} |")
    idle, trend = result["idle"], result["trend"]
    add("\n| moongate | idle at start | under load, first third after warm-up | under load, last third | idle at end |")
    add("|---|---:|---:|---:|---:|")
    for key, label in (("rss_kib", "RSS KiB"), ("fds", "open descriptors")):
        add(f"| {label} | {idle['start'][key]} | {trend[key]['first_third_median']} | "
            f"{trend[key]['last_third_median']} | {idle['end'][key]} |")
    if result.get("skipped_faults"):
        add("\nFaults left out (--skip): " + ", ".join(result["skipped_faults"]))
    add("\n| check | result | detail |")
    add("|---|---|---|")
    for name, passed, detail in result["checks"]:
        add(f"| {name} | {'pass' if passed else '**FAIL**'} | {detail} |")
    return "\n".join(lines)


def build(rec, minutes, warmup, idle, alive, exit_status, open_tunnels, policy_faults, fd_allowance, **extra):
    kinds = {}
    names = sorted(set(rec.counts), key=lambda k: (TRAFFIC.index(k) if k in TRAFFIC else len(TRAFFIC), k))
    for kind in names:
        latencies = [ms for (k, _), values in rec.latency.items() if k == kind for ms in values]
        injected = sum(n for (k, _, inj), n in rec.failures.items() if k == kind and inj)
        other = sum(n for (k, _, inj), n in rec.failures.items() if k == kind and not inj)
        kinds[kind] = {"operations": rec.counts[kind], "ok": rec.ok[kind], "injected": injected, "other": other,
                       "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99)}
    failures = [{"kind": k, "cause": c, "injected": inj, "count": n, "first": rec.examples[(k, c, inj)]}
                for (k, c, inj), n in sorted(rec.failures.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1]))]
    per_minute = {}
    for (kind, minute), values in rec.latency.items():
        if kind in TRAFFIC and minute < minutes:   # operations begun in the stop phase left out
            per_minute.setdefault(str(minute), {})[kind] = percentile(values, 99)
    result = {
        "minutes": minutes, "warmup_seconds": warmup, "kinds": kinds, "failures": failures,
        "soak_failures": rec.soak_failures(), "p99_per_minute": per_minute, "idle": idle,
        "trend": resource_trend(rec.samples, warmup), "samples": rec.samples, "events": rec.events,
        "alive_at_end": alive, "exit_status": exit_status, "open_tunnels_at_end": open_tunnels,
        "policy_faults": policy_faults, **extra,
    }
    result["checks"] = verdicts(result, fd_allowance)
    result["passed"] = all(passed for _, passed, _ in result["checks"])
    return result


def save(result, path):
    with open(path, "w") as out:
        json.dump(result, out, indent=1, default=str)
