"""The one settings file. Every deployment difference is an environment variable.

With no variables set, the platform runs on its embedded default: SQLite under var/, an in-memory
Celery broker with a worker thread inside the server process, and an in-memory channel layer.
Setting DATABASE_URL and REDIS_URL gives the production shape (Postgres, Redis, separate workers).
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url

from apps.core.env import env_bool, env_choice, env_float, env_int, env_list, env_str
from apps.core.queues import Queue

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("PLAYGROUND_VAR_DIR", str(BASE_DIR / "var"))).resolve()

DEBUG = env_bool("DEBUG", default=False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    # The embedded default keeps a generated key under var/ so sessions survive a restart.
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    _key_file = VAR_DIR / "secret_key"
    if not _key_file.exists():
        import secrets

        _key_file.write_text(secrets.token_urlsafe(50))
    SECRET_KEY = _key_file.read_text().strip()

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Security headers on every answer; the Content-Security-Policy is apps.core.middleware's.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
# HTTPS=true: the site is served over HTTPS (directly, or behind a proxy that sets
# X-Forwarded-Proto): cookies are Secure, HTTP redirects to HTTPS, and HSTS is on.
HTTPS = env_bool("HTTPS", False)
if HTTPS:
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]  # probes and scrapers
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    # Asking browsers to preload HSTS is a commitment for the whole domain: opt in only.
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        SILENCED_SYSTEM_CHECKS = ["security.W021"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "template_partials",
    "apps.core",
    "apps.audit",
    "apps.accounts",
    "apps.catalog",
    "apps.inference",
    "apps.chat",
    "apps.api",
    "apps.finetuning",
    "apps.evals",
    "playground",
]

MIDDLEWARE = [
    "apps.core.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "apps.core.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "apps.accounts.middleware.AccountLanguageMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "apps.core.middleware.ServiceUnavailableMiddleware",
]

ROOT_URLCONF = "playground.urls"
ASGI_APPLICATION = "playground.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    # A connection per request and per task, closed when it ends (conn_max_age 0). Kept open, as
    # they were, each thread that served an ASGI request or a stream left its connection behind
    # for a minute (Django advises against persistent connections under ASGI): measured in a
    # benchmark of 16, 32, 16, 8 and 24 streams in a row, Postgres refused the last round's tasks
    # ("too many clients", max_connections 100), which then waited a minute for the requeue.
    # Connections are checked before reuse, so web and workers recover from a database restart on
    # their own (requests meanwhile get 503: apps.core.middleware).
    DATABASES = {
        "default": dj_database_url.parse(DATABASE_URL, conn_max_age=0, conn_health_checks=True)
    }
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "playground.sqlite3"),
            # The embedded worker thread writes while the server reads.
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL;",
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "accounts-login"
LOGIN_REDIRECT_URL = "chat-index"
LOGOUT_REDIRECT_URL = "accounts-login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# The site speaks English and Simplified Chinese (locale/; `make install` compiles the catalogue):
# the account's choice (the top bar's switch), else the language cookie, else the browser's
# Accept-Language. The API always answers in English, as OpenAI's does.
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
FORMAT_MODULE_PATH = ["playground.formats"]  # the short date formats of each language
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Front-end libraries come from npm (package.json; `make install` runs npm ci) and are served
# from node_modules under vendor/.
STATICFILES_DIRS = [
    BASE_DIR / "static",
    ("vendor/htmx", BASE_DIR / "node_modules/htmx.org/dist"),
    ("vendor/highlight", BASE_DIR / "node_modules/@highlightjs/cdn-assets"),
    ("vendor/uplot", BASE_DIR / "node_modules/uplot/dist"),
]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing one
# Static files are served by the ASGI process itself, straight from the source folders.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- Redis: Celery broker and channel layer ---------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    from redis.exceptions import ConnectionError as RedisConnectionError

    # A pooled connection that Redis closed (it restarted) fails its next command; try that
    # command once more on a new connection instead of failing the request.
    REDIS_RETRY = {"retry_on_error": [RedisConnectionError]}
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 times reads out after 5 s by default, as long as channels_redis's
                # blocking pop: an idle consumer would die. Give the socket more room than that.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": 30,
                        "socket_connect_timeout": 5,
                        **REDIS_RETRY,
                    }
                ],
                "capacity": 1000,
                "expiry": 60,
            },
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": REDIS_RETRY,
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "apps.core.channel_layers.ThreadSafeInMemoryChannelLayer"}
    }
    CELERY_BROKER_URL = "memory://"

CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 900, minimum=10)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 30
# acks_late with Redis: an unacknowledged task comes back after this; keep it above the time limit.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT + 300}
CELERY_TASK_DEFAULT_QUEUE = "default"
# Queues by workload (apps.core.queues.Queue). Counting a dataset's tokens needs only a tokenizer,
# which inference workers have at hand; training waits for a training worker.
CELERY_TASK_ROUTES = {
    "apps.inference.tasks.*": {"queue": Queue.INFERENCE.value},
    "apps.api.tasks.run_batch": {"queue": Queue.INFERENCE.value},
    "apps.evals.tasks.run_eval": {"queue": Queue.INFERENCE.value},
    "apps.finetuning.tasks.analyze_dataset": {"queue": Queue.INFERENCE.value},
    "apps.finetuning.tasks.run_finetune_job": {"queue": Queue.TRAINING.value},
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Every worker also consumes a queue of its own, so that a conversation's next turn can go to the
# worker holding its cells (apps.inference.affinity).
CELERY_WORKER_DIRECT = True

# --- Inference ------------------------------------------------------------------------------
MODEL_CACHE_DIR = Path(env_str("MODEL_CACHE_DIR", str(VAR_DIR / "models"))).resolve()
# auto: on CUDA bfloat16 (float16 where bf16 is missing); on a CPU the chat engine keeps weights as
# packed float16 for fbgemm (fast from 1 to 32 rows), falling back to float32.
INFERENCE_DTYPE = env_choice("INFERENCE_DTYPE", "auto", ("auto", "float32", "bfloat16", "float16"))
INFERENCE_DEVICE = env_choice("INFERENCE_DEVICE", "auto", ("auto", "cpu", "cuda"))
INFERENCE_THREADS = env_int("INFERENCE_THREADS", 0, minimum=0)  # 0: the core count
# Concurrent generation tasks a worker accepts (threads that mostly wait on their stream). The engine
# runs up to INFERENCE_MAX_BATCH of them per forward pass, within INFERENCE_KV_CACHE_MB of KV cache
# per model, and queues the rest.
INFERENCE_CONCURRENCY = env_int("INFERENCE_CONCURRENCY", 32, minimum=1)
INFERENCE_MAX_BATCH = env_int("INFERENCE_MAX_BATCH", 32, minimum=1)
INFERENCE_KV_CACHE_MB = env_int("INFERENCE_KV_CACHE_MB", 2048, minimum=16)
# Cooperative wall-clock limit for one generation, enforced by the engine loop.
INFERENCE_MAX_SECONDS = env_float("INFERENCE_MAX_SECONDS", 600.0)
# The engine hands each stream at most one delta per interval (the first text goes at once), and
# the task writes and publishes each one. Each costs CPU in the worker, Redis and the web process:
# at 0.1 s a single stream still updates ten times a second, and the interval grows when many
# streams run so that all of them together send at most STREAM_FLUSHES_PER_SECOND (measured at 16
# streams on 2 cores: 100 a second cost a fifth of the platform's throughput, 20 nearly nothing).
STREAM_FLUSH_SECONDS = env_float("STREAM_FLUSH_SECONDS", 0.1)
STREAM_FLUSHES_PER_SECOND = env_float("STREAM_FLUSHES_PER_SECOND", 20.0)
# A stop is noticed by the worker within this many seconds.
CANCEL_POLL_SECONDS = env_float("CANCEL_POLL_SECONDS", 0.2)
# The backend of chat and completion models: "auto" follows each version's own choice (auto:
# llama.cpp for a GGUF file, the torch decoder for safetensors weights); "llamacpp" or
# "transformers" override it for every version; "fake" is a deterministic stand-in (tests).
INFERENCE_ENGINE = env_choice(
    "INFERENCE_ENGINE", "auto", ("auto", "llamacpp", "transformers", "fake")
)
# Prompt tokens the llama.cpp engine reads per step beside the running requests' next tokens
# (chunked prefill: a long prompt is read over several steps and never stalls the others).
INFERENCE_PREFILL_TOKENS = env_int("INFERENCE_PREFILL_TOKENS", 256, minimum=16)
# The llama.cpp engine's weights: "keep" them as the GGUF file holds them, or have llama.cpp's
# quantizer rewrite them once at load as q8_0, f16 or f32 (f32: slow, but computes as the torch
# engine does in float32); "auto" is q8_0 on a CPU (faster than a 4-bit file from 4 streams up
# and for prompts, at the same quality) and keep on a GPU (README, "The serving engine").
INFERENCE_GGUF_TYPE = env_choice(
    "INFERENCE_GGUF_TYPE", "auto", ("auto", "keep", "q8_0", "f16", "f32")
)

# Models each inference worker loads at start, before the first request needs them.
INFERENCE_WARM_MODELS = env_list("INFERENCE_WARM_MODELS", ["smollm2-135m-instruct"])
# Weights that one inference worker process keeps loaded, in MiB (0: no limit). Beyond it the least
# recently used idle model is unloaded (apps.inference.engines).
INFERENCE_MEMORY_MB = env_int("INFERENCE_MEMORY_MB", 0, minimum=0)
# Admin-registered local models (and LoRA adapters) must lie under this folder, or under
# FINETUNE_OUTPUT_DIR; a relative source is read from here.
MODELS_ROOT = Path(env_str("MODELS_ROOT", str(VAR_DIR / "local-models"))).resolve()

# --- Operations -----------------------------------------------------------------------------
# Every worker reports itself this often (playground.worker); one silent for longer than
# WORKER_LOST_SECONDS is lost: it does not count for /readyz, and the work it held is reaped.
WORKER_HEARTBEAT_SECONDS = env_float("WORKER_HEARTBEAT_SECONDS", 5.0)
WORKER_LOST_SECONDS = env_float("WORKER_LOST_SECONDS", 20.0)
# Work still waiting for a worker this long after its message went to the broker has its message
# sent again by a worker's heartbeat: the broker lost it (a Redis restart; apps.core.work).
REQUEUE_SECONDS = env_float("REQUEUE_SECONDS", 60.0)
# The Batch API: requests of one batch in flight at once (each an engine sequence; the engine's
# other INFERENCE_MAX_BATCH sequences stay free for interactive requests, which overtake them),
# how often its runner looks at them, and the most requests one batch holds.
BATCH_CONCURRENCY = env_int("BATCH_CONCURRENCY", 4, minimum=1)
BATCH_POLL_SECONDS = env_float("BATCH_POLL_SECONDS", 0.5)
# An eval run keeps this many of its items in flight at batch priority (the engine batches
# them; interactive requests overtake them), and looks at them this often.
EVAL_CONCURRENCY = env_int("EVAL_CONCURRENCY", 16, minimum=1)
EVAL_POLL_SECONDS = env_float("EVAL_POLL_SECONDS", 0.25)
EVAL_MAX_SECONDS = env_int("EVAL_MAX_SECONDS", 4 * 3600, minimum=60)
# How often a batch request's text is written and published (nobody streams it): each write
# takes CPU from the interactive requests.
BATCH_FLUSH_SECONDS = env_float("BATCH_FLUSH_SECONDS", 1.0)
BATCH_MAX_REQUESTS = env_int("BATCH_MAX_REQUESTS", 50000, minimum=1)
BATCH_MAX_UPLOAD_BYTES = env_int("BATCH_MAX_UPLOAD_BYTES", 200 << 20, minimum=1)
# A generation whose worker is lost goes back to the queue and another worker continues it, up to
# this many claims in all; then it fails with worker_lost (work that keeps killing its workers).
WORK_MAX_ATTEMPTS = env_int("WORK_MAX_ATTEMPTS", 3, minimum=1)
# /metrics answers staff sessions, and requests with "Authorization: Bearer <METRICS_TOKEN>".
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
# Staff do not read users' conversations unless this is on; each read is then written to the
# audit log.
ADMIN_CONVERSATION_ACCESS = env_bool("ADMIN_CONVERSATION_ACCESS", False)

# Requests per minute for an API key without its own limit.
API_REQUESTS_PER_MINUTE = env_int("API_REQUESTS_PER_MINUTE", 120, minimum=1)

CHAT_MAX_MESSAGE_CHARS = env_int("CHAT_MAX_MESSAGE_CHARS", 32_000, minimum=1)
# A document attached to a chat message (under MEDIA_ROOT/documents/): its file's bytes at most;
# its text is bounded by the model's context, counted in tokens.
CHAT_MAX_DOCUMENT_BYTES = env_int("CHAT_MAX_DOCUMENT_BYTES", 10 << 20, minimum=1)
CHAT_MAX_DOCUMENTS = env_int("CHAT_MAX_DOCUMENTS", 5, minimum=1)  # per message

# --- Fine-tuning ----------------------------------------------------------------------------
# Uploaded datasets (under MEDIA_ROOT/datasets/) and trained adapters or models (under
# FINETUNE_OUTPUT_DIR) must be on storage that web and workers share.
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media"))).resolve()
MEDIA_URL = "media/"  # never served: datasets are read through access checks only
FINETUNE_OUTPUT_DIR = Path(env_str("FINETUNE_OUTPUT_DIR", str(VAR_DIR / "finetuned"))).resolve()
FINETUNE_MAX_UPLOAD_BYTES = env_int("FINETUNE_MAX_UPLOAD_BYTES", 20 * 1024 * 1024, minimum=1024)
FINETUNE_MAX_ROWS = env_int("FINETUNE_MAX_ROWS", 50_000, minimum=2)
# Wall-clock limit of one job (training and evaluation): the trainer stops at its next step past
# it, and any worker's heartbeat fails a job still working beyond it.
FINETUNE_MAX_SECONDS = env_float("FINETUNE_MAX_SECONDS", 4 * 3600.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"httpx": {"level": "WARNING"}},
}
