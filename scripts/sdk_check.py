"""Checks that the official Python SDKs talk to fanfare's servers unchanged.

Usage: python scripts/sdk_check.py PATH/TO/fanfare
Starts `fanfare mock-llm --port 0`, then uses the `anthropic` and `openai` packages,
plain and streamed, and checks text, usage and an authentication error. Then starts
`fanfare serve` (simulated provider, a bearer token) and uses the `openai` package on
its OpenAI-compatible endpoint: a workflow as a model, plain and streamed. Exit 0 if
all checks pass.
"""

import os
import subprocess
import sys
import tempfile

import anthropic
import openai


def main() -> int:
    binary = sys.argv[1]
    server = subprocess.Popen(
        [binary, "mock-llm", "--port", "0", "--latency-ms", "20", "--require-key", "sdk-key"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first = server.stdout.readline().strip()
        base = first.rsplit(" ", 1)[-1]
        assert base.startswith("http://127.0.0.1:"), first

        a = anthropic.Anthropic(api_key="sdk-key", base_url=base, max_retries=0)
        msg = a.messages.create(
            model="claude-test", max_tokens=64, system="Be brief.",
            messages=[{"role": "user", "content": "Should we log user queries?"}],
        )
        assert msg.content[0].type == "text" and msg.content[0].text, msg
        assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0, msg.usage
        assert msg.stop_reason == "end_turn", msg.stop_reason

        with a.messages.stream(
            model="claude-test", max_tokens=64,
            messages=[{"role": "user", "content": "Should we log user queries?"}],
        ) as stream:
            streamed = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert streamed == msg.content[0].text, (streamed, msg.content[0].text)
        assert final.usage.output_tokens > 0, final.usage

        try:
            anthropic.Anthropic(api_key="wrong", base_url=base, max_retries=0).messages.create(
                model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
            raise AssertionError("a wrong key should be refused")
        except anthropic.AuthenticationError:
            pass

        o = openai.OpenAI(api_key="sdk-key", base_url=base + "/v1", max_retries=0)
        chat = o.chat.completions.create(
            model="gpt-test", max_tokens=64,
            messages=[{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Should we log user queries?"}],
        )
        assert chat.choices[0].message.content == msg.content[0].text
        assert chat.usage.prompt_tokens > 0 and chat.usage.completion_tokens > 0, chat.usage

        chunks = list(o.chat.completions.create(
            model="gpt-test", max_tokens=64, stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Should we log user queries?"}],
        ))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == chat.choices[0].message.content, text
        assert chunks[-1].usage and chunks[-1].usage.completion_tokens > 0, chunks[-1]

        try:
            openai.OpenAI(api_key="wrong", base_url=base + "/v1", max_retries=0).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}])
            raise AssertionError("a wrong key should be refused")
        except openai.AuthenticationError:
            pass

        print(f"sdk-check: anthropic {anthropic.__version__} and openai {openai.__version__} OK against {base}")
        check_serve(binary)
        return 0
    finally:
        server.terminate()
        server.wait(timeout=10)


def check_serve(binary: str) -> None:
    """A workflow served as a model, through the official openai client."""
    with tempfile.TemporaryDirectory() as tmp:
        token_file = os.path.join(tmp, "token")
        with open(token_file, "w") as f:
            f.write("serve-token-for-the-sdk-check\n")
        env = {k: v for k, v in os.environ.items()
               if k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "RUST_LOG")}
        server = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--db", os.path.join(tmp, "runs.db"),
             "--token-file", token_file],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
        )
        try:
            base = None
            for line in server.stderr:
                if "serving on http://" in line:
                    base = line.split("serving on ", 1)[1].split()[0]
                    break
            assert base, "fanfare serve did not say where it listens"
            o = openai.OpenAI(api_key="serve-token-for-the-sdk-check", base_url=base + "/v1", max_retries=0)
            models = [m.id for m in o.models.list()]
            assert "fanfare/perspectives" in models, models
            question = [{"role": "user", "content": "Should we adopt a four-day week?"}]
            chat = o.chat.completions.create(model="fanfare/perspectives", messages=question)
            answer = chat.choices[0].message.content
            assert answer and "synthesiser" in answer, answer
            # Four branches and the merge: more tokens than the merge call alone.
            assert chat.usage.prompt_tokens > 0 and chat.usage.total_tokens > 0, chat.usage
            chunks = list(o.chat.completions.create(
                model="fanfare/perspectives", messages=question, stream=True,
                stream_options={"include_usage": True}))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert len(chunks) > 3 and "synthesiser" in text, (len(chunks), text)
            assert chunks[-1].usage and chunks[-1].usage.total_tokens > 0, chunks[-1]
            try:
                o.chat.completions.create(model="gpt-4o", messages=question)
                raise AssertionError("an unknown model should be refused")
            except openai.NotFoundError:
                pass
            try:
                openai.OpenAI(api_key="wrong", base_url=base + "/v1", max_retries=0).models.list()
                raise AssertionError("a wrong token should be refused")
            except openai.AuthenticationError:
                pass
            print(f"sdk-check: openai {openai.__version__} OK against fanfare serve at {base}")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
