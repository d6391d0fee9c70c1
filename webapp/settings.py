"""Django settings for Loraworks, all read from environment variables through `webapp.env`.

Local defaults need nothing set: SQLite and files under var/, Redis on localhost, a secret key generated on
first run. PRODUCTION=1 turns on the strict checks (SECRET_KEY and ALLOWED_HOSTS required, secure cookies).
"""
from pathlib import Path

from webapp.cache import redis_cache
from webapp.env import (LOG_LEVELS, allowed_hosts, database_from_url, env_bool, env_choice, env_int, env_list,
                        env_rate, env_str, env_url, secret_key)
from webapp.storage import default_storage_from_env

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))

PRODUCTION = env_bool("PRODUCTION", False)
DEBUG = env_bool("DEBUG", not PRODUCTION)
SECRET_KEY = secret_key(PRODUCTION, VAR_DIR / "secret_key")
ALLOWED_HOSTS = allowed_hosts(PRODUCTION)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

DATABASES = {"default": database_from_url(env_str("DATABASE_URL", "sqlite:///var/db.sqlite3"), BASE_DIR)}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not memory, so that worker processes started by integration tests see the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_url("REDIS_URL", "redis://127.0.0.1:6379/0", ("redis", "rediss", "unix"))
# Rendered fragments (webapp.fragments), keyed by what they show, live in the same Redis.
CACHES = redis_cache(REDIS_URL)

MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"
MAX_UPLOAD_MB = env_int("MAX_UPLOAD_MB", 1024, minimum=1, maximum=1024 * 1024)
# Uploads stream to disk in chunks: Django never keeps more than this in memory per file.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "webapp.teams",
    "webapp.dashboard",
    "webapp.catalog",
    "webapp.datasets",
    "webapp.jobs",
    "webapp.results",
    "webapp.accounts",
    "webapp.api",
    "webapp.serving",
    "webapp.ops",
    "webapp.audit",
]

MIDDLEWARE = [
    "webapp.ops.middleware.HealthzMiddleware",  # first: probes by address over HTTP (no host check, no redirect)
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "webapp.teams.middleware.CurrentTeamMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "webapp.teams.context.current_team",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
# Failed sign-ins allowed per username and per address within the window before the login page answers 429.
LOGIN_MAX_FAILURES = env_int("LOGIN_MAX_FAILURES", 5, minimum=1)
LOGIN_MAX_FAILURES_PER_ADDRESS = env_int("LOGIN_MAX_FAILURES_PER_ADDRESS", 30, minimum=1)
LOGIN_WINDOW_S = env_int("LOGIN_WINDOW_S", 900, minimum=1)
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
# Production serves collected files; local runs serve them from the source folders (WHITENOISE_USE_FINDERS).
STATIC_ROOT = VAR_DIR / "static" if PRODUCTION else None
STATICFILES_DIRS = [BASE_DIR / "webapp" / "static"]
STORAGES = {
    # STORAGE_BACKEND=local (MEDIA_ROOT) or s3 (AWS_STORAGE_BUCKET_NAME, AWS_S3_ENDPOINT_URL, ...): webapp/storage.py
    "default": default_storage_from_env(),
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
                    if PRODUCTION else "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Local runs serve static files straight from the app folders, so no collectstatic step can go stale.
WHITENOISE_USE_FINDERS = not PRODUCTION

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if PRODUCTION else None
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = PRODUCTION
SECURE_HSTS_PRELOAD = PRODUCTION
X_FRAME_OPTIONS = "DENY"

# Celery: broker and results on Redis; queues `default`, `train` and `infer` (declared in workers.celery_app).
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# With late acks, a task whose worker died is handed out again after this many seconds.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=10)}
# The memory a training worker advertises to the job form's fit check (workers.capacity); 0: its GPU's, else RAM.
WORKER_MEMORY_MB = env_int("WORKER_MEMORY_MB", 0, minimum=0)
# How many GPUs (on a CPU worker: processes) a training worker trains each job on, as one data-parallel job
# (trainer.distributed), and on how many machines: only 1 for now (workers.capacity refuses more at start-up).
WORKER_GPUS = env_int("WORKER_GPUS", 1, minimum=1, maximum=64)
WORKER_NODES = env_int("WORKER_NODES", 1, minimum=1)

# Playground (queue `infer`): models one infer worker process keeps loaded (LRU), request bounds, stream wait.
PLAYGROUND_CACHE_SIZE = env_int("PLAYGROUND_CACHE_SIZE", 4, minimum=1, maximum=64)
PLAYGROUND_MAX_PROMPT_CHARS = env_int("PLAYGROUND_MAX_PROMPT_CHARS", 4000, minimum=1)
PLAYGROUND_MAX_NEW_TOKENS = env_int("PLAYGROUND_MAX_NEW_TOKENS", 256, minimum=1, maximum=8192)
PLAYGROUND_STREAM_TIMEOUT_S = env_int("PLAYGROUND_STREAM_TIMEOUT_S", 120, minimum=1)

# Serving (/v1 and the playground's generation, webapp.serving): the queue its workers serve, how long a worker
# waits for more requests to batch with the first, the most rows in one batch, adapters and base models one
# worker process keeps loaded (LRU).
INFER_QUEUE = env_str("INFER_QUEUE", "infer")
SERVE_BATCH_WINDOW_MS = env_int("SERVE_BATCH_WINDOW_MS", 10, minimum=0, maximum=1000)
SERVE_MAX_BATCH = env_int("SERVE_MAX_BATCH", 32, minimum=1, maximum=512)
SERVE_ADAPTER_CACHE = env_int("SERVE_ADAPTER_CACHE", 16, minimum=1, maximum=1024)
SERVE_BASE_CACHE = env_int("SERVE_BASE_CACHE", 1, minimum=1, maximum=8)

# Per-token API rate limits ("N/second|minute|hour|day"; "0" turns one off), counted in Redis: Rate(count,
# period_s) or None.
API_RATE_LIMIT_JOBS = env_rate("API_RATE_LIMIT_JOBS", "30/hour")
API_RATE_LIMIT_PLAYGROUND = env_rate("API_RATE_LIMIT_PLAYGROUND", "60/minute")
API_RATE_LIMIT_SERVING = env_rate("API_RATE_LIMIT_SERVING", "600/minute")  # /v1 completions

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_choice("LOG_LEVEL", "INFO", LOG_LEVELS)},
}
