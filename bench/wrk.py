"""Running wrk with bench/paths.lua and reading its BENCH_JSON line."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).with_name("paths.lua")


def find_wrk() -> str:
    found = shutil.which("wrk") or ("/usr/bin/wrk" if Path("/usr/bin/wrk").exists() else None)
    if found is None:
        raise RuntimeError("wrk is not installed: `make bench` installs it "
                           "(tools/ensure-system-deps.sh wrk), or apt-get install wrk")
    return found


@dataclass(frozen=True)
class WrkResult:
    name: str
    url: str
    command: str
    requests: int
    duration_s: float
    bytes: int
    errors: dict[str, int]
    latency_us: dict[str, float]
    output: str

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def non_2xx(self) -> int:
        """Responses outside 2xx/3xx (wrk's "status" errors)."""
        return self.errors.get("status", 0)

    @property
    def socket_errors(self) -> int:
        return sum(v for k, v in self.errors.items() if k != "status")

    @property
    def p50_ms(self) -> float:
        return self.latency_us["p50"] / 1000

    @property
    def p99_ms(self) -> float:
        return self.latency_us["p99"] / 1000

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "url": self.url, "command": self.command,
                "requests": self.requests, "duration_s": self.duration_s,
                "rps": round(self.rps, 1), "bytes": self.bytes, "errors": self.errors,
                "latency_us": self.latency_us}


def run_wrk(name: str, base_url: str, paths_file: Path, *, duration: float, connections: int,
            threads: int, mode: str = "rr", out_dir: Path | None = None,
            timeout_s: float = 2.0) -> WrkResult:
    argv = [find_wrk(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
            f"--timeout={timeout_s:g}s", "--latency", "-s", str(LUA), base_url,
            "--", str(paths_file), mode]
    command = shlex.join(argv)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60,
                          check=False)
    output = proc.stdout + (f"\n[stderr]\n{proc.stderr}" if proc.stderr.strip() else "")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"wrk-{name}.txt").write_text(f"$ {command}\n{output}")
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}) for {name}:\n{output[-3000:]}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    return WrkResult(name=name, url=base_url, command=command, requests=data["requests"],
                     duration_s=data["duration_us"] / 1e6, bytes=data["bytes"],
                     errors=data["errors"], latency_us=data["latency_us"], output=output)
