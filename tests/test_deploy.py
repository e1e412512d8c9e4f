"""Safe to deploy: the production settings (subprocesses with a clean, production-like
environment: settings are read once per process), static files through WhiteNoise, and the
compose stack (docker-compose.yml, Dockerfile, .dockerignore, .env.example)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HOST = "shop.example.com"
# What the environment of the test run may hold that would leak into "production".
CLEARED = {"VAR_DIR", "STATIC_ROOT", "MEDIA_ROOT", "DATABASE_URL", "CELERY_BROKER_URL", "REDIS_CACHE_URL",
           "QDRANT_URL", "QDRANT_API_KEY", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS"}


def clean_env(tmp_path: Path, **extra: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_") and k not in CLEARED}
    env["VAR_DIR"] = str(tmp_path / "var")
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def production_env(tmp_path: Path, **extra: str | None) -> dict[str, str]:
    """DEBUG unset, a long random key, a real host, and the Qdrant server with a broker (the
    embedded index with a broker is similarity.E010)."""
    return clean_env(tmp_path, **{
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "DJANGO_ALLOWED_HOSTS": HOST,
        "CELERY_BROKER_URL": "redis://127.0.0.1:9/0", "QDRANT_URL": "http://qdrant:6333", **extra,
    })


def manage(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**env, "DJANGO_SETTINGS_MODULE": "config.settings"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


# --- Settings ------------------------------------------------------------------------------

def test_check_deploy_passes_with_a_production_environment(tmp_path):
    done = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues (0 silenced)." in done.stdout


def test_check_deploy_passes_with_the_compose_web_environment(tmp_path):
    """What docker-compose.yml gives the web container, with .env.example filled in."""
    env = dict(compose_services()["web"]["environment"])
    env["VAR_DIR"] = str(tmp_path / "var")
    env["MEDIA_ROOT"] = str(tmp_path / "media")
    done = manage("check", "--deploy", "--fail-level", "WARNING",
                  env={**clean_env(tmp_path), **{k: str(v) for k, v in env.items()}})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues (0 silenced)." in done.stdout


@pytest.mark.parametrize("command", [["check"], ["similarity_reindex", "--pending"], ["migrate"]])
def test_debug_off_without_a_secret_key_refuses_in_one_line(tmp_path, command):
    done = manage(*command, env=clean_env(tmp_path, DJANGO_ALLOWED_HOSTS=HOST))
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("django.core.exceptions.ImproperlyConfigured: DJANGO_SECRET_KEY is not set;")
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr


def test_debug_on_runs_with_the_dev_only_key(tmp_path):
    done = manage("check", env=clean_env(tmp_path, DJANGO_DEBUG="1"))
    assert done.returncode == 0, done.stderr


SETTINGS = ["DEBUG", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS",
            "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
            "SECURE_PROXY_SSL_HEADER", "STORAGES", "SERVE_MEDIA", "MIDDLEWARE"]


def read_settings(env: dict[str, str]) -> dict[str, Any]:
    done = python("import json; from django.conf import settings as s; "
                  f"print(json.dumps({{n: getattr(s, n, None) for n in {SETTINGS!r}}}))", env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_debug_off_by_default_with_every_https_setting_on(tmp_path):
    conf = read_settings(production_env(tmp_path))
    assert conf["DEBUG"] is False
    assert conf["ALLOWED_HOSTS"] == [HOST]
    assert conf["SECURE_SSL_REDIRECT"] and conf["SESSION_COOKIE_SECURE"] and conf["CSRF_COOKIE_SECURE"]
    assert conf["SECURE_HSTS_SECONDS"] >= 3600
    assert conf["SECURE_HSTS_INCLUDE_SUBDOMAINS"] and conf["SECURE_HSTS_PRELOAD"]
    assert conf["SECURE_PROXY_SSL_HEADER"] is None, "no proxy header is trusted unless configured"
    assert conf["STORAGES"]["staticfiles"]["BACKEND"] == "whitenoise.storage.CompressedManifestStaticFilesStorage"
    assert conf["SERVE_MEDIA"] is False
    assert conf["MIDDLEWARE"][:2] == ["django.middleware.security.SecurityMiddleware",
                                      "whitenoise.middleware.WhiteNoiseMiddleware"]


def test_debug_on_relaxes_https_and_needs_no_manifest(tmp_path):
    conf = read_settings(clean_env(tmp_path, DJANGO_DEBUG="1"))
    assert conf["DEBUG"] is True
    assert "localhost" in conf["ALLOWED_HOSTS"]
    assert not (conf["SECURE_SSL_REDIRECT"] or conf["SESSION_COOKIE_SECURE"] or conf["SECURE_HSTS_SECONDS"])
    assert conf["STORAGES"]["staticfiles"]["BACKEND"] == "django.contrib.staticfiles.storage.StaticFilesStorage"


def test_security_settings_come_from_the_environment(tmp_path):
    conf = read_settings(production_env(
        tmp_path, DJANGO_ALLOWED_HOSTS=f"{HOST}, .example.org", DJANGO_CSRF_TRUSTED_ORIGINS="https://admin.example.com",
        DJANGO_SECURE_SSL_REDIRECT="0", DJANGO_SECURE_HSTS_SECONDS="31536000", DJANGO_SECURE_HSTS_PRELOAD="false",
        DJANGO_SESSION_COOKIE_SECURE="off", DJANGO_SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto",
        DJANGO_STATIC_MANIFEST="0", DJANGO_SERVE_MEDIA="1", DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS="",
    ))
    assert conf["ALLOWED_HOSTS"] == [HOST, ".example.org"]
    assert conf["CSRF_TRUSTED_ORIGINS"] == ["https://admin.example.com"]
    assert conf["SECURE_SSL_REDIRECT"] is False and conf["SESSION_COOKIE_SECURE"] is False
    assert conf["SECURE_HSTS_SECONDS"] == 31536000 and conf["SECURE_HSTS_PRELOAD"] is False
    assert conf["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True, "empty (as compose passes an unset one) is the default"
    assert conf["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert conf["STORAGES"]["staticfiles"]["BACKEND"].endswith(".StaticFilesStorage")
    assert conf["SERVE_MEDIA"] is True
    custom = read_settings(production_env(tmp_path, DJANGO_SECURE_PROXY_SSL_HEADER="X-Forwarded-Ssl=on"))
    assert custom["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_SSL", "on"]


def test_a_malformed_switch_names_the_variable(tmp_path):
    done = python("from django.conf import settings; settings.DEBUG",
                  production_env(tmp_path, DJANGO_SECURE_SSL_REDIRECT="maybe"))
    assert done.returncode != 0
    assert "DJANGO_SECURE_SSL_REDIRECT='maybe': use 1 or 0." in done.stderr.strip().splitlines()[-1]


# --- Static and media with DEBUG off -------------------------------------------------------

REQUESTS = """
import django, json
django.setup()
from django.contrib.staticfiles.storage import staticfiles_storage
from django.test import Client

client = Client(HTTP_HOST="shop.example.com")
hashed = staticfiles_storage.url("admin/css/base.css")
out = {"hashed": hashed}
r = client.get(hashed, secure=True, HTTP_ACCEPT_ENCODING="gzip")
out["hashed_file"] = [r.status_code, r.get("Content-Encoding"), r.get("Cache-Control"), r.get("Content-Type")]
r = client.get("/static/admin/css/base.css", secure=True)
out["plain_name"] = [r.status_code, b"".join(r.streaming_content).decode()[:2000] if r.status_code == 200 else ""]
r = client.get("/admin/login/", secure=True)
out["admin"] = [r.status_code, r.content.decode(), r.get("Strict-Transport-Security")]
r = client.get("/admin/login/")
out["http"] = [r.status_code, r.get("Location")]
r = client.get("/healthz")
out["healthz"] = [r.status_code, r.content.decode()]
r = client.get("/media/products/note.txt", secure=True)
out["media"] = [r.status_code, b"".join(r.streaming_content).decode() if r.status_code == 200 else ""]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> dict[str, str]:
    """collectstatic with DEBUG off into a temporary STATIC_ROOT (what the Docker image does)."""
    tmp = tmp_path_factory.mktemp("deploy-static")
    (tmp / "media" / "products").mkdir(parents=True)
    (tmp / "media" / "products" / "note.txt").write_text("uploaded")
    env = production_env(tmp, STATIC_ROOT=str(tmp / "static"), MEDIA_ROOT=str(tmp / "media"))
    done = manage("collectstatic", "--noinput", env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp / "static" / "staticfiles.json").is_file()
    assert (tmp / "static" / "admin" / "css" / "base.css.gz").is_file()
    return env


def serve(env: dict[str, str]) -> dict[str, Any]:
    done = python(REQUESTS, env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_static_files_are_served_by_whitenoise_with_debug_off(collected):
    out = serve(collected)
    assert re.fullmatch(r"/static/admin/css/base\.[0-9a-f]{12}\.css", out["hashed"]), out["hashed"]
    status, encoding, cache_control, content_type = out["hashed_file"]
    assert status == 200 and encoding == "gzip" and content_type.startswith("text/css")
    assert "immutable" in cache_control, "hashed names are cached for good"
    assert out["plain_name"][0] == 200 and "body" in out["plain_name"][1]
    status, page, hsts = out["admin"]
    assert status == 200 and out["hashed"] in page, "templates link the hashed, compressed files"
    assert hsts == "max-age=3600; includeSubDomains; preload"


def test_plain_http_is_redirected_except_the_health_check(collected):
    out = serve(collected)
    assert out["http"] == [301, f"https://{HOST}/admin/login/"]
    assert out["healthz"] == [200, "ok\n"]


def test_media_is_served_only_under_the_explicit_switch(collected):
    assert serve(collected)["media"][0] == 404
    assert serve({**collected, "DJANGO_SERVE_MEDIA": "1"})["media"] == [200, "uploaded"]


# --- The compose stack ---------------------------------------------------------------------

COMPOSE = ROOT / "docker-compose.yml"
REQUIRED = ["DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "POSTGRES_PASSWORD", "QDRANT_API_KEY"]
APP_SERVICES = ["migrate", "web", "gpu-worker", "beat"]
_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


class MissingVariable(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution (`${VAR}`, `${VAR:-default}`, `${VAR:?error}`, `$$`), for
    when no docker compose CLI is at hand."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.groups()
        current = env.get(name)
        missing = not current if op and op.startswith(":") else current is None
        if op and op.endswith("?") and missing:
            raise MissingVariable(f"required variable {name} is missing a value: {arg}")
        if op and op.endswith("-") and missing:
            return arg
        return current or ""

    return _VARIABLE.sub(substitute, value)


def env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def filled_env() -> dict[str, str]:
    """.env.example with the secrets filled in, as a deployer would."""
    env = env_example()
    env.update(DJANGO_SECRET_KEY=secrets.token_urlsafe(50), POSTGRES_PASSWORD=secrets.token_hex(16),
               QDRANT_API_KEY=secrets.token_hex(16))
    return env


def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def compose_services(env: dict[str, str] | None = None) -> dict[str, Any]:
    return interpolate(raw_compose(), filled_env() if env is None else env)["services"]


def compose_cli() -> list[str] | None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) and subprocess.run([*command, "version"], capture_output=True).returncode == 0:
            return command
    return None


def test_docker_compose_config_accepts_a_filled_env_and_names_a_missing_one(tmp_path):
    cli = compose_cli()
    if cli is None:
        pytest.skip("no docker compose CLI here; test_compose_* check the file with PyYAML instead")
    base = {k: v for k, v in os.environ.items() if k not in env_example()}

    def config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        env_file = tmp_path / "test.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        return subprocess.run([*cli, "--env-file", str(env_file), "-f", str(COMPOSE), "config", "-q"], cwd=ROOT,
                              env=base, capture_output=True, text=True, timeout=60)

    done = config(filled_env())
    assert done.returncode == 0, done.stderr
    missing = config({**filled_env(), "POSTGRES_PASSWORD": ""})
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr


@pytest.mark.parametrize("name", REQUIRED)
def test_compose_refuses_to_start_without_a_required_variable(name):
    with pytest.raises(MissingVariable, match=name):
        compose_services({**filled_env(), name: ""})


def test_env_example_lists_every_variable_and_no_secret():
    example = env_example()
    used = {match.group(1) for match in _VARIABLE.finditer(COMPOSE.read_text()) if match.group(1)}
    assert used <= set(example), f"missing from .env.example: {sorted(used - set(example))}"
    assert all(example[name] == "" for name in ["DJANGO_SECRET_KEY", "POSTGRES_PASSWORD", "QDRANT_API_KEY"]), \
        "an unedited copy must not start a stack with a published secret"


def test_compose_secrets_are_never_literals():
    raw = raw_compose()
    app_env = raw["services"]["web"]["environment"]
    assert raw["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert "${POSTGRES_PASSWORD:?" in app_env["DATABASE_URL"]
    assert app_env["DJANGO_SECRET_KEY"].startswith("${DJANGO_SECRET_KEY:?")
    assert raw["services"]["qdrant"]["environment"]["QDRANT__SERVICE__API_KEY"].startswith("${QDRANT_API_KEY:?")


def test_compose_every_service_has_a_health_check_and_waits_for_healthy_ones():
    services = compose_services()
    one_shot = {name for name, service in services.items() if service.get("restart") == "no"}
    assert one_shot == {"migrate"}
    for name, service in services.items():
        if name not in one_shot:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dependency, rule in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dependency in one_shot else "service_healthy"
            assert rule == {"condition": expected}, (name, dependency, rule)
    for name in ["web", "gpu-worker", "beat"]:
        assert set(services[name]["depends_on"]) == {"postgres", "redis", "qdrant", "migrate"}
    tests = {name: " ".join(services[name]["healthcheck"]["test"]) for name in set(services) - one_shot}
    assert "pg_isready" in tests["postgres"] and "redis-cli ping" in tests["redis"]
    assert "/readyz" in tests["qdrant"] and "/healthz" in tests["web"]
    assert "celery -A workers inspect ping" in tests["gpu-worker"]


def test_compose_qdrant_is_private_and_keyed():
    env = filled_env()
    services = compose_services(env)
    assert "ports" not in services["qdrant"]
    assert services["qdrant"]["environment"]["QDRANT__SERVICE__API_KEY"] == env["QDRANT_API_KEY"]
    for name in APP_SERVICES:
        assert services[name]["environment"]["QDRANT_API_KEY"] == env["QDRANT_API_KEY"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond the host"


def test_compose_every_app_service_gets_the_whole_shared_environment():
    """The GPU worker used to replace the shared map (and so ran with DEBUG on)."""
    services = compose_services()
    shared = raw_compose()["x-app-env"]
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert set(shared) <= set(env), f"{name} lacks {sorted(set(shared) - set(env))}"
        assert env["DJANGO_DEBUG"] == "0"
        assert env["QDRANT_URL"] and env["CELERY_BROKER_URL"], "the embedded index cannot serve several processes"
    assert services["gpu-worker"]["environment"]["SIMILARITY_DEVICE"] == "cuda"
    assert len({services[name]["environment"]["DJANGO_SECRET_KEY"] for name in APP_SERVICES}) == 1


def test_compose_runs_the_worker_and_beat_of_the_workers_app():
    services = compose_services()
    assert services["gpu-worker"]["command"].startswith("celery -A workers worker -Q similarity")
    assert services["beat"]["command"].startswith("celery -A workers beat")
    assert services["migrate"]["command"] == "python manage.py migrate --noinput"
    assert "command" not in services["web"], "the image's gunicorn command"
    assert int(services["web"]["environment"]["WEB_CONCURRENCY"]) >= 1


def test_dockerfile_bakes_static_files_and_runs_unprivileged():
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    runs = " ".join(line for line in lines if line.startswith("RUN") or line.startswith("&&"))
    assert "manage.py collectstatic --noinput" in runs
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    cmd = json.loads(next(line for line in lines if line.startswith("CMD "))[4:])
    assert cmd[0] == "gunicorn" and "--workers" not in cmd and "-w" not in cmd, \
        "one process unless WEB_CONCURRENCY says more (the embedded index serves one)"
    assert "--threads" in cmd


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for entry in [".env", ".git/", ".venv/", "var/", "media/", "**/*.sqlite3", "**/__pycache__/", ".pytest_cache/",
                  ".mypy_cache/", ".ruff_cache/", "dist/", "build/", "test-artifacts/", "bench/results/"]:
        assert entry in ignored, entry


# --- The health checks, run for real (ports moved to free ones) -----------------------------

def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Any, timeout: float = 60) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


def test_web_health_check_passes_against_a_live_server_with_debug_off(tmp_path):
    port = free_port()
    env = production_env(tmp_path, DJANGO_ALLOWED_HOSTS=f".{HOST},other.example.com")
    check = compose_services()["web"]["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "-c"] and "8000" in check[3]
    code = check[3].replace("8000", str(port))
    server = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload",
                               "--skip-checks"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # The first allowed host is a pattern (.shop.example.com): the check asks as shop.example.com.
        assert wait_for(lambda: subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
                        .returncode == 0), "the web health check never passed"
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True).returncode != 0


def test_qdrant_health_check_reads_the_readiness_endpoint(tmp_path):
    """The bash-only check (the image has no curl) against a stand-in that answers like Qdrant."""
    import http.server
    import threading

    if not shutil.which("bash"):
        pytest.skip("no bash")

    class Qdrant(http.server.BaseHTTPRequestHandler):
        ready = True

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200 if self.path == "/readyz" and Qdrant.ready else 503)
            self.end_headers()
            self.wfile.write(b"all shards are ready")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Qdrant)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    check = compose_services()["qdrant"]["healthcheck"]["test"]
    assert check[:3] == ["CMD", "bash", "-c"]
    script = check[3].replace("6333", str(server.server_address[1]))
    try:
        assert subprocess.run(["bash", "-c", script], timeout=10).returncode == 0
        Qdrant.ready = False
        assert subprocess.run(["bash", "-c", script], timeout=10).returncode != 0
    finally:
        server.shutdown()


@pytest.mark.slow
def test_worker_health_check_pings_its_own_worker(tmp_path):
    import socket

    redis_url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        import redis

        redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()
    except Exception:  # noqa: BLE001 - any failure means no Redis to test against
        pytest.skip(f"Redis is not reachable at {redis_url}")
    env = production_env(tmp_path, CELERY_BROKER_URL=redis_url, QDRANT_URL="http://127.0.0.1:9",
                         HOSTNAME=socket.gethostname(), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    check = compose_services()["gpu-worker"]["healthcheck"]["test"]
    assert check[0] == "CMD-SHELL"
    script = check[1].replace("--timeout 10", "--timeout 3")
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "deploy-test",
                               "-c", "1", "--pool", "solo", "--without-gossip", "--without-mingle"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: subprocess.run(["sh", "-c", script], cwd=ROOT, env=env).returncode == 0, 90)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    other = {**env, "HOSTNAME": "not-this-container"}
    assert subprocess.run(["sh", "-c", script], cwd=ROOT, env=other, capture_output=True).returncode != 0
