"""Entry point: ``python3 -m wsctl_agent``."""

from __future__ import annotations

import signal
import sys
import time
from types import FrameType

from . import log
from .app import Agent
from .config import Config, ConfigError

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_CRASH_KNOB = 3


def main() -> int:
    try:
        config = Config.from_env()
    except ConfigError as exc:
        log.error("config_invalid", error=str(exc))
        return EXIT_CONFIG
    log.configure(config.log_level)
    try:
        agent = Agent(config)
    except OSError as exc:
        log.error("listen_failed", host=config.bind_host, port=config.port, error=str(exc))
        return EXIT_CONFIG

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal", name=signal.Signals(signum).name)
        agent.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    status, detail = agent.state.health()
    log.info(
        "start",
        workspace_id=config.workspace_id,
        port=agent.port,
        registry=log.safe_url(config.registry_url),
        llm_base_url=log.safe_url(config.anthropic_base_url),
        model=config.anthropic_model,
        llm_credential="set" if config.has_llm_credential else "unset",
        status=status,
        error_detail=detail,
    )
    if config.echo is not None:
        log.info("echo", text=config.echo)
    agent.start()
    code = EXIT_OK
    deadline = (
        time.monotonic() + config.exit_after_seconds
        if config.exit_after_seconds is not None
        else None
    )
    while not agent.stop.is_set():
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if agent.stop.wait(timeout):
            break
        if deadline is not None and time.monotonic() >= deadline:
            log.error("exit_after", seconds=config.exit_after_seconds, exit_code=EXIT_CRASH_KNOB)
            code = EXIT_CRASH_KNOB
            break
    agent.shutdown()
    log.info("stopped", exit_code=code)
    return code


if __name__ == "__main__":
    sys.exit(main())
