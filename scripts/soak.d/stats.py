"""What the soak records: outcomes per traffic kind, failures by cause (injected or not), latency
per minute, and the proxy's resource samples. Thread-safe."""
import collections
import threading
import time


class Recorder:
    def __init__(self):
        self.t0 = time.time()
        self.lock = threading.Lock()
        self.counts = collections.Counter()        # kind -> requests (or tunnels, sessions, faults)
        self.ok = collections.Counter()            # kind -> succeeded as expected
        self.failures = collections.Counter()      # (kind, cause, injected) -> n
        self.examples = {}                         # (kind, cause, injected) -> first detail
        self.latency = collections.defaultdict(list)  # (kind, minute) -> [ms]
        self.samples = []                          # resource samples (dicts)
        self.events = []                           # labelled fault and reload events

    def minute(self, t):
        return int((t - self.t0) // 60)

    def success(self, kind, started, finished=None):
        """One operation of `kind` finished as expected; its latency counts for the minute it began."""
        finished = finished or time.time()
        with self.lock:
            self.counts[kind] += 1
            self.ok[kind] += 1
            self.latency[(kind, self.minute(started))].append((finished - started) * 1000)

    def failure(self, kind, cause, detail="", injected=False):
        """One operation of `kind` failed. `injected`: the failure is what an injected fault should
        cause; otherwise it is a soak failure."""
        key = (kind, cause, injected)
        with self.lock:
            self.counts[kind] += 1
            self.failures[key] += 1
            self.examples.setdefault(key, f"{time.time() - self.t0:.1f}s: {detail}"[:300])

    def event(self, label, detail=""):
        with self.lock:
            self.events.append({"t": round(time.time() - self.t0, 2), "event": label, "detail": detail})

    def sample(self, **values):
        with self.lock:
            self.samples.append({"t": round(time.time() - self.t0, 1), **values})

    def soak_failures(self):
        with self.lock:
            return sum(n for (_, _, injected), n in self.failures.items() if not injected)


def percentile(values, p):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]
