"""Mutual TLS on the Flight mesh, without Spark: a throwaway CA and worker certificates."""

import datetime
import ipaddress

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from svb_spark import SVBLogisticRegression
from svb_spark.core import wire
from svb_spark.core.exchange import ExchangeError
from svb_spark.transport.flight import FlightMeshExchange
from svb_spark.transport.tls import TLS_CONF_KEYS, TlsFiles, tls_files_from_conf
from tests.test_exchange import _expected, _run_workers

SECRET = "s3cret-token-that-must-not-leak"


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject, issuer, public_key, signing_key, *, ca):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _write(path, data):
    path.write_bytes(data)
    return str(path)


def _pem(certificate):
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _make_ca(directory, name, workers):
    """A self-signed CA in ``directory`` and one TlsFiles per worker name, all under it."""
    directory.mkdir()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(_name(name), _name(name), ca_key.public_key(), ca_key, ca=True)
    ca_path = _write(directory / "ca.pem", _pem(ca))
    files = []
    for worker in workers:
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = _certificate(_name(worker), ca.subject, key.public_key(), ca_key, ca=False)
        files.append(
            TlsFiles(
                cert=_write(directory / f"{worker}.pem", _pem(certificate)),
                key=_write(directory / f"{worker}.key", _key_pem(key)),
                ca=ca_path,
            )
        )
    return files


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """Two workers of the cluster's CA, and one worker of a rogue CA."""
    root = tmp_path_factory.mktemp("tls")
    workers = _make_ca(root / "cluster", "svb test CA", ["worker0", "worker1"])
    (rogue,) = _make_ca(root / "rogue", "rogue CA", ["rogue"])
    return workers, rogue


@pytest.fixture
def mesh():
    made = []

    def make(tls_files, timeout=5.0):
        exchanges = [
            FlightMeshExchange(rank, len(tls_files), "127.0.0.1", SECRET, timeout, tls=files)
            for rank, files in enumerate(tls_files)
        ]
        made.extend(exchanges)
        return exchanges

    yield make
    for exchange in made:
        exchange.close()


def _put(client, batch, token=SECRET):
    options = flight.FlightCallOptions(
        headers=[(b"authorization", f"Bearer {token}".encode())], timeout=5
    )
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("0", "7"), batch.schema, options)
    writer.write_batch(batch)
    writer.close()


def _assert_no_secret(errors, caplog):
    for error in errors:
        assert SECRET not in str(error) and SECRET not in repr(error)
    assert SECRET not in caplog.text


def test_two_tls_workers_exchange_in_rank_order_and_count_bytes(certificates, mesh):
    workers, _ = certificates
    exchanges = mesh(workers)
    locations = [exchange.location for exchange in exchanges]
    assert all(location.startswith("grpc+tls://127.0.0.1:") for location in locations)
    for exchange in exchanges:
        exchange.connect(locations)

    steps = 3
    seen = _run_workers(exchanges, steps)
    assert seen == {0: _expected(2, steps), 1: _expected(2, steps)}
    payload, framing = wire.message_bytes(pa.RecordBatch.from_pydict({"v": [0.0]}))
    for exchange in exchanges:
        assert (exchange.payload_sent, exchange.framing_sent) == (steps * payload, steps * framing)
        assert exchange.bytes_received == steps * (payload + framing)


def test_tls_server_refuses_clients_without_a_certificate_of_its_ca(certificates, mesh, caplog):
    workers, rogue = certificates
    (server,) = mesh(workers[:1])
    batch = pa.RecordBatch.from_pydict({"v": [1.0]})
    ca = open(workers[0].ca, "rb").read()
    without_certificate = flight.FlightClient(server.location, tls_root_certs=ca)
    with_rogue_certificate = flight.FlightClient(
        server.location,
        tls_root_certs=ca,
        cert_chain=open(rogue.cert, "rb").read(),
        private_key=open(rogue.key, "rb").read(),
    )
    errors = []
    for client in (without_certificate, with_rogue_certificate):
        # The right token is not enough: the handshake fails before any call reaches the server.
        with pytest.raises(flight.FlightError) as refused:
            _put(client, batch)
        errors.append(refused.value)
        client.close()

    # A whole worker of the rogue CA (trusting the cluster's CA, so only the server can refuse).
    intruder = FlightMeshExchange(
        0, 2, "127.0.0.1", SECRET, 5.0, tls=TlsFiles(rogue.cert, rogue.key, workers[0].ca)
    )
    try:
        intruder.connect([intruder.location, server.location])
        with pytest.raises(ExchangeError, match="could not send step 0 to worker 1") as refused:
            intruder._send(1, 0, batch)
        assert "spark.svb.tls.ca" in str(refused.value)
        errors.append(refused.value)
    finally:
        intruder.close()
    assert server._server.mailbox == {}
    _assert_no_secret(errors, caplog)


def test_plain_clients_cannot_talk_to_a_tls_server(certificates, mesh, caplog):
    workers, _ = certificates
    (server,) = mesh(workers[:1])
    batch = pa.RecordBatch.from_pydict({"v": [1.0]})
    plain_location = server.location.replace("grpc+tls://", "grpc+tcp://")
    client = flight.FlightClient(plain_location)
    with pytest.raises(flight.FlightError) as refused:
        _put(client, batch)
    client.close()

    plain = FlightMeshExchange(0, 2, "127.0.0.1", SECRET, 5.0)
    try:
        assert plain.location.startswith("grpc+tcp://")
        plain.connect([plain.location, plain_location])
        with pytest.raises(ExchangeError) as plain_refused:
            plain._send(1, 0, batch)
    finally:
        plain.close()
    assert server._server.mailbox == {}
    _assert_no_secret([refused.value, plain_refused.value], caplog)


def test_tls_files_from_conf():
    cert, key, ca = TLS_CONF_KEYS
    assert TLS_CONF_KEYS == ("spark.svb.tls.cert", "spark.svb.tls.key", "spark.svb.tls.ca")
    assert tls_files_from_conf({}.get) is None
    assert tls_files_from_conf(dict.fromkeys(TLS_CONF_KEYS, "").get) is None
    conf = {cert: "/etc/svb/w.pem", key: "/etc/svb/w.key", ca: "/etc/svb/ca.pem"}
    assert tls_files_from_conf(conf.get) == TlsFiles(
        cert="/etc/svb/w.pem", key="/etc/svb/w.key", ca="/etc/svb/ca.pem"
    )

    with pytest.raises(ValueError) as partial:
        tls_files_from_conf({cert: "/etc/svb/w.pem", ca: "/etc/svb/ca.pem"}.get)
    message = str(partial.value)
    assert "spark.svb.tls.key is not set" in message
    assert "but spark.svb.tls.cert, spark.svb.tls.ca are" in message
    assert "set all three" in message and "or none of them" in message

    with pytest.raises(ValueError, match="spark.svb.tls.cert, spark.svb.tls.ca are not set"):
        tls_files_from_conf({key: "/etc/svb/w.key"}.get)


def test_unreadable_or_wrong_files_name_the_setting_and_path_never_the_contents(
    certificates, tmp_path, caplog
):
    workers, rogue = certificates
    good = workers[0]
    missing = str(tmp_path / "no-such.pem")
    not_pem = _write(tmp_path / "not.pem", b"PRIVATE-CONTENTS-THAT-MUST-NOT-SHOW")
    encrypted = _write(
        tmp_path / "encrypted.key",
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        ),
    )
    cases = [
        (TlsFiles(missing, good.key, good.ca), "spark.svb.tls.cert", missing),
        (TlsFiles(good.cert, missing, good.ca), "spark.svb.tls.key", missing),
        (TlsFiles(good.cert, good.key, str(tmp_path)), "spark.svb.tls.ca", str(tmp_path)),
        (TlsFiles(good.cert, not_pem, good.ca), "spark.svb.tls.key", not_pem),
        (TlsFiles(not_pem, good.key, good.ca), "spark.svb.tls.cert", not_pem),
        (TlsFiles(good.cert, encrypted, good.ca), "spark.svb.tls.key", encrypted),
    ]
    errors = []
    for files, conf_key, path in cases:
        with pytest.raises(ValueError) as refused:
            FlightMeshExchange(0, 1, "127.0.0.1", SECRET, 5.0, tls=files)
        assert conf_key in str(refused.value) and path in str(refused.value)
        assert "MUST-NOT-SHOW" not in str(refused.value)
        errors.append(refused.value)

    # PEM files of the right kinds that do not fit together: gRPC cannot start the server.
    with pytest.raises(ExchangeError, match="could not start its TLS Flight server") as refused:
        FlightMeshExchange(
            0, 1, "127.0.0.1", SECRET, 5.0, tls=TlsFiles(good.cert, rogue.key, good.ca)
        )
    assert good.cert in str(refused.value) and rogue.key in str(refused.value)
    assert "PRIVATE KEY" not in str(refused.value)
    errors.append(refused.value)
    _assert_no_secret(errors, caplog)


def test_a_fit_with_the_tls_conf_keys_trains_over_grpc_tls(spark, certificates, digits_frames):
    workers, _ = certificates
    train, _ = digits_frames
    estimator = SVBLogisticRegression(numWorkers=2, maxIter=3, dtype="float64")
    plain = estimator.fit(train)
    for key, value in zip(TLS_CONF_KEYS, (workers[0].cert, workers[0].key, workers[0].ca)):
        spark.conf.set(key, value)
    try:
        secured = estimator.fit(train)
    finally:
        for key in TLS_CONF_KEYS:
            spark.conf.unset(key)

    assert all(w["location"].startswith("grpc+tls://") for w in secured.summary.workers)
    assert all(w["location"].startswith("grpc+tcp://") for w in plain.summary.workers)
    # TLS changes the wire, not the numbers.
    np.testing.assert_array_equal(
        secured.coefficientMatrix.toArray(), plain.coefficientMatrix.toArray()
    )
