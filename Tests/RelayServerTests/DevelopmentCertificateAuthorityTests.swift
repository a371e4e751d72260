import Dispatch
import Foundation
import NIOSSL
import Testing

@testable import RelayServer

/// The files `ensure` writes must satisfy real strict verifiers (OpenSSL, Python's ssl) and NIOSSL, and be reused or
/// replaced exactly when they should be.
@Suite("DevelopmentCertificateAuthority")
struct DevelopmentCertificateAuthorityTests {
    // MARK: Fresh directory

    @Test func freshDirectoryGetsStrictlyVerifiableFiles() throws {
        try withTemporaryDirectory { root in
            let directory = root + "/nested/certs"
            let paths = try DevelopmentCertificateAuthority(directory: directory).ensure()

            #expect(try permissions(of: directory) == 0o700)
            let files = [paths.caCertificate, paths.caPrivateKey, paths.serverCertificateChain, paths.serverPrivateKey]
            for path in files {
                #expect(FileManager.default.fileExists(atPath: path), "\(path) missing")
            }
            #expect(try permissions(of: paths.caPrivateKey) == 0o600)
            #expect(try permissions(of: paths.serverPrivateKey) == 0o600)
            // No temporary files are left behind.
            #expect(
                try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
                    == ["ca-key.pem", "ca.pem", "server-key.pem", "server.pem"]
            )

            try expectVerifies(paths)
            try expectVerifies(paths, purpose: "sslserver")

            let chain = try String(contentsOfFile: paths.serverCertificateChain, encoding: .utf8)
            #expect(chain.components(separatedBy: "-----BEGIN CERTIFICATE-----").count - 1 == 2)

            let leaf = try run(["openssl", "x509", "-noout", "-text", "-in", paths.serverCertificateChain])
            try #require(leaf.status == 0, "\(leaf.errorOutput)")
            for fragment in [
                "Subject: O = MediaRelay, CN = localhost",
                "Issuer: O = MediaRelay, CN = MediaRelay Development CA ",
                "DNS:localhost", "IP Address:127.0.0.1", "IP Address:0:0:0:0:0:0:0:1",
                "X509v3 Basic Constraints: critical", "CA:FALSE",
                "X509v3 Key Usage: critical", "Digital Signature",
                "X509v3 Extended Key Usage", "TLS Web Server Authentication",
                "X509v3 Authority Key Identifier", "X509v3 Subject Key Identifier",
                "ecdsa-with-SHA256", "prime256v1",
            ] {
                #expect(leaf.output.contains(fragment), "leaf text lacks \(fragment)")
            }
            #expect(!leaf.output.contains("Certificate Sign"))

            let authority = try run(["openssl", "x509", "-noout", "-text", "-in", paths.caCertificate])
            try #require(authority.status == 0, "\(authority.errorOutput)")
            for fragment in [
                "Subject: O = MediaRelay, CN = MediaRelay Development CA ",
                "X509v3 Basic Constraints: critical", "CA:TRUE",
                "X509v3 Key Usage: critical", "Certificate Sign, CRL Sign",
                "X509v3 Subject Key Identifier",
            ] {
                #expect(authority.output.contains(fragment), "CA text lacks \(fragment)")
            }

            // The leaf's AKI names the CA's SKI.
            let caKeyID = try keyIdentifier(after: "X509v3 Subject Key Identifier:", in: authority.output)
            let leafAuthorityKeyID = try keyIdentifier(after: "X509v3 Authority Key Identifier:", in: leaf.output)
            #expect(leafAuthorityKeyID.hasSuffix(caKeyID), "AKI \(leafAuthorityKeyID) ≠ CA SKI \(caKeyID)")

            // Serials are positive, at most 20 octets, and differ between the two certificates.
            let leafSerial = try serial(of: paths.serverCertificateChain)
            let caSerial = try serial(of: paths.caCertificate)
            #expect(leafSerial != caSerial)
            for serial in [leafSerial, caSerial] {
                #expect(serial.count <= 40 && serial.count >= 16, "serial \(serial)")
                #expect(!serial.hasPrefix("-"), "serial \(serial)")
            }

            // Lifetimes: the leaf lasts at most 397 days, the CA about ten years.
            let day = 24 * 60 * 60
            #expect(try checkEnd(paths.serverCertificateChain, seconds: 395 * day))
            #expect(try !checkEnd(paths.serverCertificateChain, seconds: 397 * day))
            #expect(try checkEnd(paths.caCertificate, seconds: 3650 * day))
            #expect(try !checkEnd(paths.caCertificate, seconds: 3653 * day))
        }
    }

    // MARK: Python strict verification over a real handshake

    @Test func pythonStrictClientCompletesHandshake() throws {
        try withTemporaryDirectory { directory in
            _ = try DevelopmentCertificateAuthority(directory: directory).ensure()
            let python = try #require(try pythonInterpreter(), "no usable python3")
            let result = try run([python, "-c", Self.pythonHandshakeScript, directory], timeout: 60)
            #expect(result.status == 0, "python: \(result.output)\n\(result.errorOutput)")
            for host in ["localhost", "127.0.0.1", "::1"] {
                #expect(result.output.contains("verified \(host)"), "python: \(result.output)\n\(result.errorOutput)")
            }
            // Rejected for the name, not for some flaw that would also break the good hosts.
            #expect(result.output.contains("rejected wrong.example - Hostname mismatch"))
            #expect(result.output.contains("rejected untrusted CA"))
        }
    }

    /// Serves the leaf chain on 127.0.0.1 from a thread and connects with a strict client: hostname checks for every
    /// SAN, plus two handshakes that must fail (wrong name, CA not trusted) so a verifier that accepts anything is caught.
    static let pythonHandshakeScript = #"""
        import socket, ssl, sys, threading
        d = sys.argv[1]
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(d + "/server.pem", d + "/server-key.pem")
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(20)
        port = listener.getsockname()[1]
        attempts = ["localhost", "127.0.0.1", "::1", "wrong.example", "untrusted CA"]

        def serve():
            for _ in attempts:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                conn.settimeout(10)
                try:
                    with server_ctx.wrap_socket(conn, server_side=True) as tls:
                        tls.sendall(b"ok")
                except (OSError, ssl.SSLError):
                    pass
                finally:
                    conn.close()

        server = threading.Thread(target=serve, daemon=True)
        server.start()

        strict = ssl.create_default_context(cafile=d + "/ca.pem")
        strict.verify_flags |= ssl.VERIFY_X509_STRICT
        assert strict.verify_flags & ssl.VERIFY_X509_STRICT
        assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
        other = ssl.create_default_context()  # system roots only: the dev CA is not in them
        other.verify_flags |= ssl.VERIFY_X509_STRICT

        def connect(ctx, host):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname=host) as tls:
                    return tls.recv(2), tls.version()

        failed = False
        print(sys.version.split()[0], ssl.OPENSSL_VERSION)
        for host in attempts:
            ctx = other if host == "untrusted CA" else strict
            name = "localhost" if host == "untrusted CA" else host
            try:
                data, version = connect(ctx, name)
                if host in ("wrong.example", "untrusted CA"):
                    print("ACCEPTED", host, "but must not")
                    failed = True
                elif data == b"ok":
                    print("verified", host, version)
                else:
                    print("bad data", host, data)
                    failed = True
            except ssl.SSLCertVerificationError as error:
                if host in ("wrong.example", "untrusted CA"):
                    print("rejected", host, "-", error.verify_message)
                else:
                    print("FAILED", host, "-", error.verify_message)
                    failed = True
        server.join(20)
        sys.exit(1 if failed else 0)
        """#

    // MARK: Reuse and reissue

    @Test func secondCallReusesTheSameFiles() throws {
        try withTemporaryDirectory { directory in
            let authority = DevelopmentCertificateAuthority(directory: directory)
            let paths = try authority.ensure()
            let first = try contents(paths)
            #expect(try authority.ensure() == paths)
            #expect(try contents(paths) == first)
            // A later run (a new process) with the same names also reuses them.
            #expect(try DevelopmentCertificateAuthority(directory: directory).ensure(now: Date() + 3600) == paths)
            #expect(try contents(paths) == first)
        }
    }

    @Test func expiredLeafIsReissuedUnderTheSameCA() throws {
        try withTemporaryDirectory { directory in
            let authority = DevelopmentCertificateAuthority(directory: directory)
            let start = Date()
            let paths = try authority.ensure(now: start)
            let first = try contents(paths)
            let later = start + 400 * 24 * 60 * 60
            // Sanity: the first leaf is dead by then, so a passing verification below proves the reissue.
            #expect(try !verifies(paths, at: later))

            #expect(try authority.ensure(now: later) == paths)
            let second = try contents(paths)
            #expect(second.caCertificate == first.caCertificate)
            #expect(second.caPrivateKey == first.caPrivateKey)
            #expect(second.serverCertificateChain != first.serverCertificateChain)
            #expect(second.serverPrivateKey != first.serverPrivateKey)
            #expect(try verifies(paths, at: later))
        }
    }

    @Test func leafIsKeptWithMoreThanSevenDaysLeftAndReplacedWithLess() throws {
        try withTemporaryDirectory { directory in
            let authority = DevelopmentCertificateAuthority(directory: directory)
            let start = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
            let paths = try authority.ensure(now: start)
            let first = try contents(paths)
            let day: TimeInterval = 24 * 60 * 60
            let leafExpiry = try notAfter(paths.serverCertificateChain)

            _ = try authority.ensure(now: leafExpiry - 8 * day)
            #expect(try contents(paths) == first)

            _ = try authority.ensure(now: leafExpiry - 6 * day)
            let second = try contents(paths)
            #expect(second.serverCertificateChain != first.serverCertificateChain)
            #expect(second.caCertificate == first.caCertificate)
            #expect(try verifies(paths, at: leafExpiry - 6 * day))
        }
    }

    @Test func newlyRequestedNamesReissueTheLeaf() throws {
        try withTemporaryDirectory { directory in
            let paths = try DevelopmentCertificateAuthority(directory: directory).ensure()
            let first = try contents(paths)

            let wider = DevelopmentCertificateAuthority(
                directory: directory,
                dnsNames: ["localhost", "Relay.Test"],
                ipAddresses: ["127.0.0.1", "::1", "10.1.2.3", "fd00::5"]
            )
            _ = try wider.ensure()
            let second = try contents(paths)
            #expect(second.serverCertificateChain != first.serverCertificateChain)
            #expect(second.caCertificate == first.caCertificate)
            try expectVerifies(paths)
            let text = try run(["openssl", "x509", "-noout", "-text", "-in", paths.serverCertificateChain]).output
            for fragment in ["DNS:localhost", "DNS:relay.test", "IP Address:10.1.2.3", "IP Address:FD00:0:0:0:0:0:0:5"]
            {
                #expect(text.contains(fragment), "leaf text lacks \(fragment)")
            }
            let hostCheck = try run([
                "openssl", "verify", "-x509_strict", "-verify_hostname", "relay.test",
                "-CAfile", paths.caCertificate, paths.serverCertificateChain,
            ])
            #expect(hostCheck.status == 0, "\(hostCheck.output)\(hostCheck.errorOutput)")

            // The default names are a subset of what the leaf now covers: nothing changes.
            _ = try DevelopmentCertificateAuthority(directory: directory).ensure()
            #expect(try contents(paths) == second)
            // Asking again with the same names in another case and order changes nothing either.
            _ = try DevelopmentCertificateAuthority(
                directory: directory,
                dnsNames: ["relay.test", "LOCALHOST"],
                ipAddresses: ["fd00:0::5", "10.1.2.3"]
            ).ensure()
            #expect(try contents(paths) == second)
        }
    }

    @Test func corruptServerChainIsReplaced() throws {
        try withTemporaryDirectory { directory in
            let authority = DevelopmentCertificateAuthority(directory: directory)
            let paths = try authority.ensure()
            let first = try contents(paths)
            try Data("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n".utf8)
                .write(to: URL(fileURLWithPath: paths.serverCertificateChain))
            #expect(try !verifies(paths))

            _ = try authority.ensure()
            let second = try contents(paths)
            #expect(second.serverCertificateChain != first.serverCertificateChain)
            #expect(second.caCertificate == first.caCertificate)
            try expectVerifies(paths)
        }
    }

    @Test func mismatchedServerKeyIsReplaced() throws {
        try withTemporaryDirectory { directory in
            let authority = DevelopmentCertificateAuthority(directory: directory)
            let paths = try authority.ensure()
            let first = try contents(paths)
            // A valid key that does not belong to the leaf (as after a crash between two renames).
            try first.caPrivateKey.write(to: URL(fileURLWithPath: paths.serverPrivateKey))

            _ = try authority.ensure()
            let second = try contents(paths)
            #expect(second.serverPrivateKey != first.caPrivateKey)
            #expect(second.serverCertificateChain != first.serverCertificateChain)
            try expectVerifies(paths)
            try expectLoadsInNIOSSL(paths)
        }
    }

    @Test func corruptOrMissingCAIsReissuedWithANewLeaf() throws {
        try withTemporaryDirectory { directory in
            let authority = DevelopmentCertificateAuthority(directory: directory)
            let paths = try authority.ensure()
            let first = try contents(paths)
            try Data("garbage".utf8).write(to: URL(fileURLWithPath: paths.caCertificate))

            _ = try authority.ensure()
            let second = try contents(paths)
            #expect(second.caCertificate != first.caCertificate)
            #expect(second.caPrivateKey != first.caPrivateKey)
            #expect(second.serverCertificateChain != first.serverCertificateChain)
            try expectVerifies(paths)

            try FileManager.default.removeItem(atPath: paths.caPrivateKey)
            _ = try authority.ensure()
            let third = try contents(paths)
            #expect(third.caCertificate != second.caCertificate)
            try expectVerifies(paths)
        }
    }

    @Test func expiringCAIsReissued() throws {
        try withTemporaryDirectory { directory in
            let authority = DevelopmentCertificateAuthority(directory: directory)
            let paths = try authority.ensure()
            let first = try contents(paths)
            let caExpiry = try notAfter(paths.caCertificate)
            let nearEnd = caExpiry - 10 * 24 * 60 * 60

            _ = try authority.ensure(now: nearEnd)
            let second = try contents(paths)
            #expect(second.caCertificate != first.caCertificate)
            #expect(try verifies(paths, at: nearEnd))
        }
    }

    @Test func loosenedKeyPermissionsAreRestored() throws {
        try withTemporaryDirectory { directory in
            let authority = DevelopmentCertificateAuthority(directory: directory)
            let paths = try authority.ensure()
            let first = try contents(paths)
            try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: paths.serverPrivateKey)
            try FileManager.default.setAttributes([.posixPermissions: 0o640], ofItemAtPath: paths.caPrivateKey)

            _ = try authority.ensure()
            #expect(try contents(paths) == first)
            #expect(try permissions(of: paths.serverPrivateKey) == 0o600)
            #expect(try permissions(of: paths.caPrivateKey) == 0o600)
        }
    }

    // MARK: NIOSSL

    @Test func nioSSLLoadsTheChainAndKey() throws {
        try withTemporaryDirectory { directory in
            let paths = try DevelopmentCertificateAuthority(directory: directory).ensure()
            try expectLoadsInNIOSSL(paths)
        }
    }

    // MARK: Errors

    @Test func directoryThatCannotBeCreatedIsAClearError() throws {
        try withTemporaryDirectory { root in
            let file = root + "/plain-file"
            try Data("x".utf8).write(to: URL(fileURLWithPath: file))

            let error = #expect(throws: DevelopmentCertificateAuthorityError.self) {
                try DevelopmentCertificateAuthority(directory: file).ensure()
            }
            #expect(error?.code == .cannotCreateDirectory)
            #expect(error?.description.contains(file) == true)

            let nested = #expect(throws: DevelopmentCertificateAuthorityError.self) {
                try DevelopmentCertificateAuthority(directory: file + "/certs").ensure()
            }
            #expect(nested?.code == .cannotCreateDirectory)
        }
    }

    @Test(arguments: [
        (["bad name"], ["127.0.0.1"]),
        (["localhost"], ["300.1.1.1"]),
        (["münchen.example"], []),
        ([], []),
    ])
    func unusableNamesAreRejectedBeforeAnythingIsWritten(dnsNames: [String], ipAddresses: [String]) throws {
        try withTemporaryDirectory { root in
            let directory = root + "/certs"
            let error = #expect(throws: DevelopmentCertificateAuthorityError.self) {
                try DevelopmentCertificateAuthority(directory: directory, dnsNames: dnsNames, ipAddresses: ipAddresses)
                    .ensure()
            }
            #expect(error?.code == .invalidName)
            #expect(!FileManager.default.fileExists(atPath: directory))
        }
    }

    @Test func ipOnlyCertificateVerifies() throws {
        try withTemporaryDirectory { directory in
            let paths = try DevelopmentCertificateAuthority(
                directory: directory,
                dnsNames: [],
                ipAddresses: ["127.0.0.1"]
            )
            .ensure()
            let result = try run([
                "openssl", "verify", "-x509_strict", "-verify_ip", "127.0.0.1",
                "-CAfile", paths.caCertificate, paths.serverCertificateChain,
            ])
            #expect(result.status == 0, "\(result.output)\(result.errorOutput)")
        }
    }
}
