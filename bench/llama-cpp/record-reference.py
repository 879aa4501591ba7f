#!/usr/bin/env python3
"""Records llama.cpp's top-10 log-probabilities for the prompts of a reference-logprobs
fixture, in the same format, from a llama-server running on this machine.

    record-reference.py FIXTURE.json PORT OUT.json "ENGINE DESCRIPTION"

Greedy, 8 steps per prompt, prompts sent as text in the fixture's order with the server's
prompt cache on, as the recorded fixtures were made (prompt ids are copied, not re-derived).
Standard library only.
"""
import json
import sys
import urllib.request


def main():
    fixture, port, out, engine = sys.argv[1:5]
    fx = json.load(open(fixture, encoding="utf-8"))
    cases = []
    for case in fx["cases"]:
        body = {"prompt": case["prompt"], "n_predict": 8, "temperature": 0,
                "n_probs": 10, "cache_prompt": True}
        req = urllib.request.Request(f"http://127.0.0.1:{port}/completion",
                                     json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        reply = json.load(urllib.request.urlopen(req))
        steps = [{"token_id": p["id"], "token": p["token"], "logprob": p["logprob"],
                  "top": [[t["id"], t["token"], t["logprob"]] for t in p["top_logprobs"]]}
                 for p in reply["completion_probabilities"]]
        cases.append({"form": case["form"], "prompt": case["prompt"],
                      "prompt_token_ids": case["prompt_token_ids"], "steps": steps})
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"model": fx["model"], "engine": engine, "cases": cases}, f,
                  ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
