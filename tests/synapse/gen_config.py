"""Write homeserver.yaml and log.yaml for a test/benchmark Synapse.

Called by tests/synapse/start with the interpreter of the Synapse venv (it
needs PyYAML, which Synapse depends on). All settings come from the command
line; nothing here looks at the environment.

The configuration is made for tests and benchmarks on one machine:
open registration without verification, every rc_* rate limit effectively
off, no stats reporting, no key servers (this machine reaches no other
homeserver), logs at WARNING to a file.

Federation: with `--federation-port`, a TLS federation listener on 127.0.0.1
(`--tls-cert`, `--tls-key`), outbound certificates checked against
`--federation-ca` (or not at all without it), and loopback taken out of
`ip_range_blacklist` so that servers on 127.0.0.1 can be reached.
"""

import argparse
import os
import secrets

import yaml

# Large enough that no benchmark or test ever reaches them.
UNLIMITED = {"per_second": 1_000_000, "burst_count": 1_000_000}


def rate_limits() -> dict:
    return {
        "rc_message": UNLIMITED,
        "rc_registration": UNLIMITED,
        "rc_registration_token_validity": UNLIMITED,
        "rc_login": {
            "address": UNLIMITED,
            "account": UNLIMITED,
            "failed_attempts": UNLIMITED,
        },
        "rc_admin_redaction": UNLIMITED,
        "rc_joins": {"local": UNLIMITED, "remote": UNLIMITED},
        "rc_joins_per_room": UNLIMITED,
        "rc_key_requests": UNLIMITED,
        "rc_3pid_validation": UNLIMITED,
        "rc_invites": {
            "per_room": UNLIMITED,
            "per_user": UNLIMITED,
            "per_issuer": UNLIMITED,
        },
        "rc_third_party_invite": UNLIMITED,
        "rc_media_create": UNLIMITED,
        "rc_presence": {"per_user": UNLIMITED},
        "rc_delayed_event_mgmt": UNLIMITED,
        "rc_room_creation": UNLIMITED,
        "rc_reports": UNLIMITED,
        "rc_user_directory": UNLIMITED,
        "rc_profile": UNLIMITED,
        "rc_federation": {
            "window_size": 1000,
            "sleep_limit": 1_000_000,
            "sleep_delay": 0,
            "reject_limit": 1_000_000,
            "concurrent": 1_000_000,
        },
        "federation_rr_transactions_per_room_per_second": 1_000_000,
        "remote_media_download_per_second": "1G",
        "remote_media_download_burst_count": "100G",
    }


def client_listener(port: int) -> dict:
    return {
        "port": port,
        "bind_addresses": ["127.0.0.1"],
        "type": "http",
        "tls": False,
        "x_forwarded": False,
        "resources": [{"names": ["client"], "compress": False}],
    }


def federation_listener(port: int) -> dict:
    # TLS on 127.0.0.1; `federation` serves /_matrix/federation and /_matrix/key.
    return {
        "port": port,
        "bind_addresses": ["127.0.0.1"],
        "type": "http",
        "tls": True,
        "x_forwarded": False,
        "resources": [{"names": ["federation"], "compress": False}],
    }


# Synapse's default `ip_range_blacklist` (still its name in the config) without loopback: the
# servers it federates with in tests live on 127.0.0.1, and Synapse checks IP-literal server
# names against this list only.
IP_RANGE_BLOCKLIST_WITHOUT_LOOPBACK = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "169.254.0.0/16",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
]


def federation(args) -> dict:
    """The settings a federating test Synapse needs besides its listener."""
    if not (args.tls_cert and args.tls_key):
        raise SystemExit("gen_config.py: --federation-port needs --tls-cert and --tls-key")
    cfg = {
        "tls_certificate_path": args.tls_cert,
        "tls_private_key_path": args.tls_key,
        "ip_range_blacklist": IP_RANGE_BLOCKLIST_WITHOUT_LOOPBACK,
        "allow_public_rooms_over_federation": True,
    }
    if args.federation_ca:
        cfg["federation_custom_ca_list"] = [args.federation_ca]
        cfg["federation_verify_certificates"] = True
    else:
        cfg["federation_verify_certificates"] = False
    return cfg


def database(args) -> dict:
    if args.db == "sqlite":
        return {
            "name": "sqlite3",
            "args": {"database": os.path.join(args.dir, "homeserver.db")},
        }
    return {
        "name": "psycopg2",
        "args": {
            "user": args.pg_user,
            "dbname": args.pg_database,
            "host": "127.0.0.1",
            "port": args.pg_port,
            "cp_min": 5,
            "cp_max": 10,
        },
    }


def log_config(args) -> dict:
    return {
        "version": 1,
        "formatters": {
            "precise": {
                "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s"
                " - %(request)s - %(message)s"
            }
        },
        "filters": {
            "context": {"()": "synapse.logging.context.LoggingContextFilter", "request": ""}
        },
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "formatter": "precise",
                "filename": os.path.join(args.dir, "homeserver.log"),
                "filters": ["context"],
                "encoding": "utf8",
            }
        },
        "root": {"level": args.log_level, "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


def homeserver_config(args) -> dict:
    listeners = [client_listener(args.port)]
    if args.federation_port:
        listeners.append(federation_listener(args.federation_port))
    cfg = {
        "server_name": args.server_name,
        "public_baseurl": f"http://127.0.0.1:{args.port}/",
        "listeners": listeners,
        "database": database(args),
        "log_config": os.path.join(args.dir, "log.yaml"),
        "media_store_path": os.path.join(args.dir, "media_store"),
        "signing_key_path": os.path.join(args.dir, "signing.key"),
        "registration_shared_secret": args.shared_secret,
        "macaroon_secret_key": args.macaroon_secret,
        "form_secret": args.form_secret,
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "report_stats": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "url_preview_enabled": False,
        "enable_metrics": False,
        # Synapse's default (12) is kept unless asked otherwise: it is what a
        # production Synapse pays on every login and registration.
        "bcrypt_rounds": args.bcrypt_rounds,
    }
    cfg.update(rate_limits())
    if args.federation_port:
        cfg.update(federation(args))
    return cfg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dir", required=True)
    p.add_argument("--server-name", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--federation-port", type=int, default=0,
                   help="a TLS federation listener on this port (0: none)")
    p.add_argument("--tls-cert", default="", help="PEM certificate of the federation listener")
    p.add_argument("--tls-key", default="", help="PEM key of the federation listener")
    p.add_argument("--federation-ca", default="",
                   help="PEM CA to trust for outbound federation (none: certificates are not checked)")
    p.add_argument("--shared-secret", required=True)
    p.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    p.add_argument("--pg-port", type=int, default=5432)
    p.add_argument("--pg-user", default="synapse")
    p.add_argument("--pg-database", default="synapse")
    p.add_argument("--bcrypt-rounds", type=int, default=12)
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args()

    # Secrets that must survive a restart are kept in the directory.
    secrets_file = os.path.join(args.dir, "secrets.yaml")
    if os.path.exists(secrets_file):
        with open(secrets_file) as f:
            kept = yaml.safe_load(f)
    else:
        kept = {"macaroon": secrets.token_hex(32), "form": secrets.token_hex(32)}
        with open(secrets_file, "w") as f:
            yaml.safe_dump(kept, f)
    args.macaroon_secret = kept["macaroon"]
    args.form_secret = kept["form"]

    with open(os.path.join(args.dir, "homeserver.yaml"), "w") as f:
        f.write("# Generated by tests/synapse/gen_config.py; rewritten at every start.\n")
        yaml.safe_dump(homeserver_config(args), f, sort_keys=False)
    with open(os.path.join(args.dir, "log.yaml"), "w") as f:
        yaml.safe_dump(log_config(args), f, sort_keys=False)


if __name__ == "__main__":
    main()
