"""The unchanged `openai` Python client against a modelforge server's language model.

    python openai_client.py BASE_URL MODEL

Prints one JSON line: the models listed, a greedy completion whole and streamed, seeded
samples alone and six at once, a seeded sample cut by a stop string, a chat completion
whole and streamed (through the /openai/v1 prefix), and the errors of bad requests.
"""
import concurrent.futures
import json
import sys

import openai


def main():
    base, model = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
    kserve = openai.OpenAI(base_url=base + "/openai/v1", api_key="unused", max_retries=0)
    report = {"models": [m.id for m in client.models.list()]}

    greedy = dict(model=model, prompt="ROMEO:", max_tokens=40, temperature=0)
    r = client.completions.create(**greedy)
    report["greedy"] = {
        "text": r.choices[0].text,
        "finish": r.choices[0].finish_reason,
        "usage": r.usage.model_dump(exclude_none=True),
        "object": r.object,
    }
    text, finish, usage, chunks = "", None, None, 0
    for chunk in client.completions.create(
        **greedy, stream=True, stream_options={"include_usage": True}
    ):
        chunks += 1
        if chunk.choices:
            text += chunk.choices[0].text
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage.model_dump(exclude_none=True)
    report["greedy_stream"] = {"text": text, "finish": finish, "usage": usage, "chunks": chunks}

    def sampled(seed, stop=None):
        r = client.completions.create(
            model=model,
            prompt="JULIET:",
            max_tokens=30,
            temperature=0.9,
            top_p=0.95,
            seed=seed,
            stop=stop,
            extra_body={"top_k": 20},
        )
        return r.choices[0].text, r.choices[0].finish_reason

    alone = sampled(7)[0]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        together = [t for t, _ in pool.map(sampled, [7, 7, 7, 8, 8, 9])]
    report["seeded"] = {"alone": alone, "together": together}
    stop = alone[8:10]
    cut, why = sampled(7, stop=[stop])
    report["stopped"] = {"stop": stop, "text": cut, "finish": why}

    chat = dict(
        model=model,
        messages=[{"role": "user", "content": "ROMEO:"}],
        max_tokens=20,
        temperature=0,
    )
    r = kserve.chat.completions.create(**chat)
    report["chat"] = {
        "content": r.choices[0].message.content,
        "role": r.choices[0].message.role,
        "finish": r.choices[0].finish_reason,
        "object": r.object,
    }
    content, roles, finish = "", [], None
    for chunk in kserve.chat.completions.create(**chat, stream=True):
        delta = chunk.choices[0].delta
        content += delta.content or ""
        if delta.role:
            roles.append(delta.role)
        finish = chunk.choices[0].finish_reason or finish
    report["chat_stream"] = {"content": content, "roles": roles, "finish": finish}

    errors = {}
    for name, change in [
        ("top_p", {"top_p": 0.0}),
        ("max_tokens", {"max_tokens": 0}),
        ("n", {"n": 2}),
        ("model", {"model": "no-such-model"}),
        ("prompt", {"prompt": "Zounds \u263a"}),
    ]:
        try:
            client.completions.create(**{**greedy, **change})
            errors[name] = None
        except openai.APIStatusError as e:
            errors[name] = {"status": e.status_code, "body": e.body}
    report["errors"] = errors
    print(json.dumps(report))


if __name__ == "__main__":
    main()
