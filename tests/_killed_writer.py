"""A child process storing messages until it is killed: which stores it acknowledged."""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap

__all__ = ["acknowledged_until_killed", "writer_script"]


def writer_script(setup: str, memory: str) -> str:
    """A script whose four writers store messages one at a time into ``memory`` (an
    expression of ``path``, the script's first argument), printing each message's id once its
    store is acknowledged; ``setup``: statements that run first (imports, helper classes)."""
    body = textwrap.dedent(
        """
        import asyncio, sys
        from bruno_core.models.message import Message, MessageRole
        {setup}

        async def main(path: str) -> None:
            memory = {memory}

            async def writer(w: int) -> None:
                for i in range(100_000):
                    message = Message(role=MessageRole.USER, content=f"writer {{w}} message {{i}}")
                    await memory.store_message(message, "user", f"conv-{{w}}")
                    print(message.id, flush=True)  # only once the store is acknowledged

            await asyncio.gather(*(writer(w) for w in range(4)))

        asyncio.run(main(sys.argv[1]))
        """
    )
    return body.format(setup=textwrap.dedent(setup).strip(), memory=memory)


async def acknowledged_until_killed(script: str, *args: str, count: int) -> list[str]:
    """Run ``script``, read ``count`` acknowledged ids, SIGKILL it; every id it printed."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    acked: list[str] = []
    try:
        while len(acked) < count:
            line = await child.stdout.readline()
            assert line, (await child.stderr.read()).decode()
            acked.append(line.decode().strip())
    finally:
        child.send_signal(signal.SIGKILL)
        rest, _ = await child.communicate()
    # Lines still in the pipe were acknowledged before the kill too.
    acked += rest.decode().split()
    assert child.returncode == -signal.SIGKILL
    return acked
