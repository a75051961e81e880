"""Optional mutual TLS for the Flight mesh: which files, from which Spark settings.

Three settings name PEM files, like Spark's own ``spark.ssl.*`` files: this executor's
certificate (chain), its private key, and the CA that signs every worker's certificate. The
paths are read on the executors, so every executor needs its own copy at the same path. With
all three set, every worker's Flight server asks each peer for a certificate signed by that CA
(and peers check the server's the same way), on top of the fit's secret.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

TLS_CONF_KEYS = ("spark.svb.tls.cert", "spark.svb.tls.key", "spark.svb.tls.ca")

_FIX = (
    "set all three to PEM paths that exist on every executor to use mutual TLS between "
    "workers, or none of them for plain grpc+tcp"
)


@dataclass(frozen=True)
class TlsFiles:
    """PEM paths for mutual TLS between the workers of a fit.

    Parameters
    ----------
    cert : str
        This executor's certificate (chain); it must name the executor's host, as Spark reports
        it for the task, as a DNS or IP subject alternative name.
    key : str
        The certificate's private key, unencrypted.
    ca : str
        The CA that signs every worker's certificate.

    Examples
    --------
    >>> conf = {"spark.svb.tls.cert": "w.pem", "spark.svb.tls.key": "w.key",
    ...         "spark.svb.tls.ca": "ca.pem"}
    >>> tls_files_from_conf(conf.get)
    TlsFiles(cert='w.pem', key='w.key', ca='ca.pem')
    """

    cert: str
    key: str
    ca: str


@dataclass(frozen=True)
class TlsMaterial:
    """The PEM bytes of :class:`TlsFiles`, as read on an executor."""

    cert: bytes
    key: bytes = field(repr=False)  # a secret: kept out of any log line or error that shows it
    ca: bytes


def tls_files_from_conf(get: Callable[[str], str | None]) -> TlsFiles | None:
    """The TLS files named by the ``spark.svb.tls.*`` settings, or None when none is set.

    Parameters
    ----------
    get : callable
        Looks up a setting: key -> value, or None when unset (``SparkConf.get`` with a None
        default, ``dict.get``). An empty value counts as unset.

    Returns
    -------
    TlsFiles or None
        None when none of :data:`TLS_CONF_KEYS` is set.

    Raises
    ------
    ValueError
        When only some of the three are set; the message names the missing and the set keys.
    """
    values = {key: (get(key) or "").strip() for key in TLS_CONF_KEYS}
    missing = [key for key, value in values.items() if not value]
    if len(missing) == len(TLS_CONF_KEYS):
        return None
    if missing:
        given = [key for key in TLS_CONF_KEYS if key not in missing]
        raise ValueError(
            f"mutual TLS needs all of {', '.join(TLS_CONF_KEYS)}; {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set, but {', '.join(given)} "
            f"{'is' if len(given) == 1 else 'are'}: {_FIX}"
        )
    cert, key, ca = (values[key] for key in TLS_CONF_KEYS)
    return TlsFiles(cert=cert, key=key, ca=ca)


# What each file must contain, checked before gRPC sees it: gRPC refuses a bad file only with
# "Server did not start properly", which names neither the file nor the problem.
_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_MARKERS = {"cert": _CERTIFICATE, "key": b"PRIVATE KEY-----", "ca": _CERTIFICATE}
# PKCS#8 and the older OpenSSL header form of a passphrase-protected key.
_ENCRYPTED_KEY_MARKERS = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")


def read_tls_files(files: TlsFiles) -> TlsMaterial:
    """Read the PEM files on this executor.

    Errors name the setting and the path, never the contents (the key is a secret).

    Raises
    ------
    ValueError
        When a file cannot be read, is not PEM of the expected kind, or the key is encrypted.
    """
    read = {}
    for name, conf_key in zip(("cert", "key", "ca"), TLS_CONF_KEYS):
        path = getattr(files, name)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as error:
            raise ValueError(
                f"{conf_key} names {path!r}, which this executor cannot read "
                f"({error.strerror or type(error).__name__}); the file must exist and be "
                "readable on every executor"
            ) from None
        if _MARKERS[name] not in data:
            kind = "a PEM private key" if name == "key" else "a PEM certificate"
            raise ValueError(f"{conf_key} names {path!r}, which is not {kind}")
        if name == "key" and any(m in data for m in _ENCRYPTED_KEY_MARKERS):
            raise ValueError(
                f"{conf_key} names {path!r}, an encrypted private key; Flight needs it "
                "unencrypted (protect it with file permissions instead)"
            )
        read[name] = data
    return TlsMaterial(**read)
