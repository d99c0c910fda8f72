"""The naive baseline: an OpenAI-style streaming endpoint that runs transformers' ``generate`` for
one request at a time, in arrival order. What a first server around a model looks like.

Usage: python bench/naive_server.py PORT
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")

import django  # noqa: E402

django.setup()

import torch  # noqa: E402
from django.conf import settings  # noqa: E402
from engine import SPEC  # noqa: E402
from transformers import TextIteratorStreamer  # noqa: E402

from apps.inference.engines.transformers_backend import load_causal_lm  # noqa: E402

torch.set_num_threads(os.cpu_count() or 1)
# bfloat16: plain generate's faster dtype for one stream on these CPUs (see the results).
TOKENIZER, MODEL = load_causal_lm(SPEC, settings.MODEL_CACHE_DIR, dtype=torch.bfloat16)
MODEL.eval()
ONE_AT_A_TIME = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        inputs = TOKENIZER.apply_chat_template(
            body["messages"], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        with ONE_AT_A_TIME:
            streamer = TextIteratorStreamer(TOKENIZER, skip_prompt=True)
            out: dict[str, torch.Tensor] = {}

            def run() -> None:
                with torch.inference_mode():
                    out["ids"] = MODEL.generate(
                        **inputs,
                        max_new_tokens=body["max_tokens"],
                        do_sample=False,
                        streamer=streamer,
                    )

            thread = threading.Thread(target=run)
            thread.start()
            for piece in streamer:
                if piece:
                    self._event({"choices": [{"index": 0, "delta": {"content": piece}}]})
            thread.join()
        tokens = int(out["ids"].shape[1] - inputs["input_ids"].shape[1])
        self._event({"choices": [], "usage": {"completion_tokens": tokens}})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def _event(self, data: dict[str, object]) -> None:
        data |= {"object": "chat.completion.chunk", "created": int(time.time())}
        self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default backlog of 5 resets clients beyond it


if __name__ == "__main__":
    Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
