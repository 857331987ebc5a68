"""An in-process gateway on a routing file of two backends, `cloud` (tencent) and `onprem` (private, TC3),
each an emulator with the tests' credentials."""

from __future__ import annotations

from pathlib import Path

from emulator import EmulatorConfig, ImsEmulator
from service.factory import build_backends
from service.server import Gateway, build_server
from service.settings import load_settings
from tests.support.gateway import SECRET_ID, SECRET_KEY


def start_emulator(port: int = 0) -> ImsEmulator:
    return ImsEmulator(
        EmulatorConfig(secret_id=SECRET_ID, secret_key=SECRET_KEY), host="127.0.0.1", port=port
    ).start()


def routes_file(tmp_path: Path, primary: ImsEmulator, secondary: ImsEmulator, routes: str) -> Path:
    path = tmp_path / "routes.toml"
    path.write_text(
        f"""
[backends.cloud]
type = "tencent"
endpoint = "{primary.url}"
secret_id_env = "GW_SECRET_ID"
secret_key_env = "GW_SECRET_KEY"

[backends.onprem]
type = "private"
url = "{secondary.url}"
auth = "tc3"
region = "ap-shanghai"
secret_id_env = "GW_SECRET_ID"
secret_key_env = "GW_SECRET_KEY"
{routes}
""",
        encoding="utf-8",
    )
    return path


async def start_gateway(path: Path, **env: str) -> Gateway:
    settings = load_settings(
        {
            "MODERATION_LISTEN": "127.0.0.1:0",
            "MODERATION_METRICS_LISTEN": "off",
            "MODERATION_ROUTES": str(path),
            # These tests send one image many times and watch which backend answers: no verdict cache.
            "MODERATION_CACHE": "off",
            "GW_SECRET_ID": SECRET_ID,
            "GW_SECRET_KEY": SECRET_KEY,
            **env,
        }
    )
    gateway = build_server(settings, build_backends(settings))
    await gateway.start()
    return gateway
