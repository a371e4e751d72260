import Crypto
public import Foundation
import SwiftASN1
import X509

#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Makes (once) and reuses a local CA and a server certificate for development, so `make run` serves HTTPS with no setup.
///
/// The certificates carry exactly the extensions that strict verifiers (OpenSSL `-x509_strict`, Python 3.13's
/// `VERIFY_X509_STRICT`) require, so a developer only has to trust `ca.pem` once.
public struct DevelopmentCertificateAuthority: Sendable {
    /// Locations of the files that `ensure(now:)` maintains.
    public struct Paths: Sendable, Hashable {
        /// `<directory>/ca.pem`: the self-signed CA certificate a client should trust.
        public let caCertificate: String
        /// `<directory>/ca-key.pem`: the CA's PKCS#8 private key, mode 0600.
        public let caPrivateKey: String
        /// `<directory>/server.pem`: the leaf certificate followed by the CA certificate.
        public let serverCertificateChain: String
        /// `<directory>/server-key.pem`: the leaf's PKCS#8 private key, mode 0600.
        public let serverPrivateKey: String

        init(directory: String) {
            let base = URL(fileURLWithPath: directory, isDirectory: true)
            self.caCertificate = base.appendingPathComponent("ca.pem").path
            self.caPrivateKey = base.appendingPathComponent("ca-key.pem").path
            self.serverCertificateChain = base.appendingPathComponent("server.pem").path
            self.serverPrivateKey = base.appendingPathComponent("server-key.pem").path
        }
    }

    /// The folder that holds the four files.
    public let directory: String
    /// DNS names the server certificate must cover.
    public let dnsNames: [String]
    /// IPv4 / IPv6 literals the server certificate must cover.
    public let ipAddresses: [String]
    /// Where the files are (whether or not they exist yet).
    public let paths: Paths

    /// Names only; nothing touches the disk until `ensure(now:)`.
    public init(
        directory: String,
        dnsNames: [String] = ["localhost"],
        ipAddresses: [String] = ["127.0.0.1", "::1"]
    ) {
        self.directory = directory
        self.dnsNames = dnsNames
        self.ipAddresses = ipAddresses
        self.paths = Paths(directory: directory)
    }

    /// Returns paths of usable files: reuses existing ones when they parse, the leaf is valid for ≥ 7 more days,
    /// chains to the CA, and covers every requested name/IP; otherwise (re)issues the leaf (and the CA too if the CA
    /// is missing/unparseable/expiring). Creates the directory (0700). Writes atomically (temp file + rename).
    public func ensure(now: Date = Date()) throws -> Paths {
        // Certificates store whole seconds; comparing against a fractional `now` would make fresh files look stale.
        let now = Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down))
        let names = try RequestedNames(dnsNames: self.dnsNames, ipAddresses: self.ipAddresses)
        try self.createDirectory()

        let authority: Authority
        let authorityIsNew: Bool
        if let existing = self.loadUsableAuthority(now: now) {
            authority = existing
            authorityIsNew = false
        } else {
            authority = try Self.issueAuthority(now: now)
            // Key first: a crash between the two renames leaves a cert/key mismatch, which the next run repairs.
            try Self.writeAtomically(authority.privateKey.pemRepresentation, to: self.paths.caPrivateKey, mode: 0o600)
            try Self.writeAtomically(authority.certificatePEM, to: self.paths.caCertificate, mode: 0o644)
            authorityIsNew = true
        }

        if authorityIsNew || !self.hasUsableLeaf(signedBy: authority, covering: names, now: now) {
            let leafKey = P256.Signing.PrivateKey()
            let leaf = try Self.issueLeaf(key: leafKey, names: names, authority: authority, now: now)
            let leafPEM: String
            do {
                leafPEM = try leaf.serializeAsPEM().pemString
            } catch {
                throw DevelopmentCertificateAuthorityError.cannotIssueCertificate(String(describing: error))
            }
            try Self.writeAtomically(leafKey.pemRepresentation, to: self.paths.serverPrivateKey, mode: 0o600)
            try Self.writeAtomically(
                leafPEM + "\n" + authority.certificatePEM,
                to: self.paths.serverCertificateChain,
                mode: 0o644
            )
        }

        // Reused key files may have been loosened by hand (or by a copy); a private key must not stay readable.
        try Self.restrictPermissions(of: self.paths.caPrivateKey)
        try Self.restrictPermissions(of: self.paths.serverPrivateKey)
        return self.paths
    }
}

// MARK: - Policy

extension DevelopmentCertificateAuthority {
    static let day: TimeInterval = 24 * 60 * 60
    /// Ten years, counting the leap days.
    static let authorityLifetime: TimeInterval = 3652 * day
    /// The CA/Browser Forum maximum that Apple platforms enforce for TLS server certificates.
    static let leafLifetime: TimeInterval = 397 * day
    static let leafMinimumRemaining: TimeInterval = 7 * day
    /// Longer than `leafMinimumRemaining`, so a leaf capped to the CA's expiry is replaced before the CA is.
    static let authorityMinimumRemaining: TimeInterval = 30 * day
    /// Tolerates a client clock slightly behind ours.
    static let backdating: TimeInterval = 60 * 60
}

// MARK: - The CA

extension DevelopmentCertificateAuthority {
    struct Authority {
        let certificate: Certificate
        let privateKey: P256.Signing.PrivateKey
        let keyIdentifier: ArraySlice<UInt8>
        let certificatePEM: String
    }

    func loadUsableAuthority(now: Date) -> Authority? {
        guard let certificatePEM = Self.readText(self.paths.caCertificate),
            let keyPEM = Self.readText(self.paths.caPrivateKey),
            let certificate = try? Certificate(pemEncoded: certificatePEM),
            let privateKey = try? P256.Signing.PrivateKey(pemRepresentation: keyPEM)
        else { return nil }

        guard certificate.publicKey == Certificate.PublicKey(privateKey.publicKey),
            certificate.issuer == certificate.subject,
            certificate.publicKey.isValidSignature(certificate.signature, for: certificate),
            certificate.notValidBefore <= now,
            certificate.notValidAfter.timeIntervalSince(now) >= Self.authorityMinimumRemaining,
            case .isCertificateAuthority = try? certificate.extensions.basicConstraints,
            let keyUsage = try? certificate.extensions.keyUsage, keyUsage.keyCertSign,
            let keyIdentifier = try? certificate.extensions.subjectKeyIdentifier?.keyIdentifier
        else { return nil }

        return Authority(
            certificate: certificate,
            privateKey: privateKey,
            keyIdentifier: keyIdentifier,
            certificatePEM: certificatePEM
        )
    }

    static func issueAuthority(now: Date) throws -> Authority {
        let privateKey = P256.Signing.PrivateKey()
        let key = Certificate.PrivateKey(privateKey)
        let keyIdentifier = SubjectKeyIdentifier(hash: key.publicKey).keyIdentifier
        // A fresh suffix per CA keeps browsers' trust stores from confusing one developer's CA with another's.
        let shortID = Self.randomBytes(count: 4).map { String(format: "%02x", $0) }.joined()
        do {
            let name = try DistinguishedName {
                OrganizationName("MediaRelay")
                CommonName("MediaRelay Development CA \(shortID)")
            }
            let notBefore = now.addingTimeInterval(-Self.backdating)
            let certificate = try Certificate(
                version: .v3,
                serialNumber: Self.randomSerialNumber(),
                publicKey: key.publicKey,
                notValidBefore: notBefore,
                notValidAfter: notBefore.addingTimeInterval(Self.authorityLifetime),
                issuer: name,
                subject: name,
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                    Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                    SubjectKeyIdentifier(keyIdentifier: keyIdentifier)
                },
                issuerPrivateKey: key
            )
            return Authority(
                certificate: certificate,
                privateKey: privateKey,
                keyIdentifier: keyIdentifier,
                certificatePEM: try certificate.serializeAsPEM().pemString + "\n"
            )
        } catch {
            throw DevelopmentCertificateAuthorityError.cannotIssueCertificate(String(describing: error))
        }
    }
}

// MARK: - The server certificate

extension DevelopmentCertificateAuthority {
    func hasUsableLeaf(signedBy authority: Authority, covering names: RequestedNames, now: Date) -> Bool {
        guard let chainPEM = Self.readText(self.paths.serverCertificateChain),
            let keyPEM = Self.readText(self.paths.serverPrivateKey),
            let documents = try? PEMDocument.parseMultiple(pemString: chainPEM),
            documents.count == 2,
            let leaf = try? Certificate(pemDocument: documents[0]),
            let chainedAuthority = try? Certificate(pemDocument: documents[1]),
            let privateKey = try? P256.Signing.PrivateKey(pemRepresentation: keyPEM)
        else { return false }

        guard chainedAuthority == authority.certificate,
            leaf.publicKey == Certificate.PublicKey(privateKey.publicKey),
            leaf.issuer == authority.certificate.subject,
            authority.certificate.publicKey.isValidSignature(leaf.signature, for: leaf),
            leaf.notValidBefore <= now,
            leaf.notValidAfter.timeIntervalSince(now) >= Self.leafMinimumRemaining,
            case .notCertificateAuthority = try? leaf.extensions.basicConstraints,
            let usages = try? leaf.extensions.extendedKeyUsage, usages.contains(.serverAuth),
            let alternativeNames = try? leaf.extensions.subjectAlternativeNames
        else { return false }

        var coveredDNSNames = Set<String>()
        var coveredIPAddresses = Set<[UInt8]>()
        for name in alternativeNames {
            switch name {
            case .dnsName(let dnsName): coveredDNSNames.insert(dnsName.lowercased())
            case .ipAddress(let address): coveredIPAddresses.insert(Array(address.bytes))
            default: continue
            }
        }
        return names.dnsNames.allSatisfy(coveredDNSNames.contains)
            && names.ipAddresses.allSatisfy(coveredIPAddresses.contains)
    }

    static func issueLeaf(
        key privateKey: P256.Signing.PrivateKey,
        names: RequestedNames,
        authority: Authority,
        now: Date
    ) throws -> Certificate {
        let key = Certificate.PrivateKey(privateKey)
        let notBefore = now.addingTimeInterval(-Self.backdating)
        // A leaf that outlives its issuer fails verification anyway; capping keeps the expiry honest.
        let notAfter = min(notBefore.addingTimeInterval(Self.leafLifetime), authority.certificate.notValidAfter)
        let alternativeNames =
            names.dnsNames.map { GeneralName.dnsName($0) }
            + names.ipAddresses.map { GeneralName.ipAddress(ASN1OctetString(contentBytes: $0[...])) }
        do {
            return try Certificate(
                version: .v3,
                serialNumber: Self.randomSerialNumber(),
                publicKey: key.publicKey,
                notValidBefore: notBefore,
                notValidAfter: notAfter,
                issuer: authority.certificate.subject,
                subject: try DistinguishedName {
                    OrganizationName("MediaRelay")
                    CommonName("localhost")
                },
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    try ExtendedKeyUsage([.serverAuth])
                    SubjectAlternativeNames(alternativeNames)
                    AuthorityKeyIdentifier(keyIdentifier: authority.keyIdentifier)
                    SubjectKeyIdentifier(hash: key.publicKey)
                },
                issuerPrivateKey: Certificate.PrivateKey(authority.privateKey)
            )
        } catch {
            throw DevelopmentCertificateAuthorityError.cannotIssueCertificate(String(describing: error))
        }
    }

    /// The validated, normalised names a server certificate must cover.
    struct RequestedNames {
        /// Lowercased; certificate name matching is case-insensitive.
        var dnsNames: [String] = []
        /// 4 bytes for IPv4, 16 for IPv6, as the SAN `iPAddress` form wants.
        var ipAddresses: [[UInt8]] = []

        init(dnsNames: [String], ipAddresses: [String]) throws {
            for name in dnsNames {
                let name = name.lowercased()
                guard Self.isValidDNSName(name) else {
                    throw DevelopmentCertificateAuthorityError.invalidName(name)
                }
                if !self.dnsNames.contains(name) { self.dnsNames.append(name) }
            }
            for literal in ipAddresses {
                guard let address = Self.addressBytes(literal) else {
                    throw DevelopmentCertificateAuthorityError.invalidName(literal)
                }
                if !self.ipAddresses.contains(address) { self.ipAddresses.append(address) }
            }
            // Strict verifiers reject a certificate whose subjectAltName is empty.
            guard !self.dnsNames.isEmpty || !self.ipAddresses.isEmpty else {
                throw DevelopmentCertificateAuthorityError.invalidName("(no DNS names and no IP addresses)")
            }
        }

        /// SAN dNSName is an IA5String; anything beyond LDH labels (plus a `*` wildcard and `_`) would be refused
        /// by clients anyway.
        static func isValidDNSName(_ name: String) -> Bool {
            guard !name.isEmpty, name.utf8.count <= 253, !name.hasPrefix("."), !name.hasSuffix(".") else {
                return false
            }
            return name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
                !label.isEmpty && label.utf8.count <= 63
                    && label.utf8.allSatisfy { byte in
                        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                            || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                            || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "*")
                    }
            }
        }

        static func addressBytes(_ literal: String) -> [UInt8]? {
            var ipv4 = in_addr()
            if inet_pton(AF_INET, literal, &ipv4) == 1 {
                return withUnsafeBytes(of: &ipv4) { Array($0) }
            }
            var ipv6 = in6_addr()
            if inet_pton(AF_INET6, literal, &ipv6) == 1 {
                return withUnsafeBytes(of: &ipv6) { Array($0) }
            }
            return nil
        }
    }
}

// MARK: - Randomness and files

extension DevelopmentCertificateAuthority {
    static func randomBytes(count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }

    /// 16 random bytes with the top bit clear and the next bit set: positive, no leading zero, and within RFC 5280's
    /// 20-octet limit (the library's own random serial can grow to 21 octets once DER adds a sign byte).
    static func randomSerialNumber() -> Certificate.SerialNumber {
        var bytes = Self.randomBytes(count: 16)
        bytes[0] = (bytes[0] & 0x7F) | 0x40
        return Certificate.SerialNumber(bytes: bytes)
    }

    static func readText(_ path: String) -> String? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return String(data: data, encoding: .utf8)
    }

    func createDirectory() throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: self.directory, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else {
                throw DevelopmentCertificateAuthorityError.cannotCreateDirectory(
                    self.directory,
                    reason: "not a directory"
                )
            }
            return
        }
        do {
            try FileManager.default.createDirectory(
                atPath: self.directory,
                withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700]
            )
        } catch {
            throw DevelopmentCertificateAuthorityError.cannotCreateDirectory(
                self.directory,
                reason: error.localizedDescription
            )
        }
    }

    /// Writes to a uniquely named sibling, flushes it, then renames it over `path`, so a reader (or a crash) sees
    /// either the old file or the new one. The temporary file is created with `mode`, so a key is never world-readable.
    static func writeAtomically(_ contents: String, to path: String, mode: mode_t) throws {
        let temporaryPath = path + ".tmp-" + Self.randomBytes(count: 6).map { String(format: "%02x", $0) }.joined()
        let descriptor = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard descriptor >= 0 else {
            throw DevelopmentCertificateAuthorityError.cannotWriteFile(path, errno: errno)
        }
        var failure: Int32? = nil
        let bytes = Array(contents.utf8)
        var written = 0
        while written < bytes.count, failure == nil {
            let result = bytes.withUnsafeBytes { buffer in
                write(descriptor, buffer.baseAddress.map { $0 + written }, buffer.count - written)
            }
            if result >= 0 {
                written += result
            } else if errno != EINTR {
                failure = errno
            }
        }
        // The umask may have cleared bits of `mode`; set it exactly.
        if failure == nil, fchmod(descriptor, mode) != 0 { failure = errno }
        if failure == nil, fsync(descriptor) != 0 { failure = errno }
        if close(descriptor) != 0, failure == nil { failure = errno }
        if failure == nil, rename(temporaryPath, path) != 0 { failure = errno }
        if let failure {
            unlink(temporaryPath)
            throw DevelopmentCertificateAuthorityError.cannotWriteFile(path, errno: failure)
        }
    }

    static func restrictPermissions(of path: String) throws {
        var status = stat()
        guard stat(path, &status) == 0 else {
            throw DevelopmentCertificateAuthorityError.cannotWriteFile(path, errno: errno)
        }
        guard status.st_mode & 0o077 != 0 else { return }
        guard chmod(path, 0o600) == 0 else {
            throw DevelopmentCertificateAuthorityError.cannotWriteFile(path, errno: errno)
        }
    }
}

// MARK: - Errors

/// Why `DevelopmentCertificateAuthority.ensure(now:)` could not provide usable files.
public struct DevelopmentCertificateAuthorityError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kind of failure; equality of errors compares only this.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Kind: Hashable, Sendable {
            case invalidName
            case cannotCreateDirectory
            case cannotWriteFile
            case cannotIssueCertificate
        }

        private let kind: Kind

        private init(_ kind: Kind) {
            self.kind = kind
        }

        /// A requested DNS name or IP address cannot go into a certificate (or none was requested).
        public static let invalidName = Code(.invalidName)
        /// The certificate directory does not exist and cannot be made.
        public static let cannotCreateDirectory = Code(.cannotCreateDirectory)
        /// A certificate or key file cannot be written.
        public static let cannotWriteFile = Code(.cannotWriteFile)
        /// Building or signing a certificate failed.
        public static let cannotIssueCertificate = Code(.cannotIssueCertificate)

        public var description: String {
            switch self.kind {
            case .invalidName: "invalid name"
            case .cannotCreateDirectory: "cannot create directory"
            case .cannotWriteFile: "cannot write file"
            case .cannotIssueCertificate: "cannot issue certificate"
            }
        }
    }

    /// The kind of failure.
    public let code: Code
    /// What failed, on what, and why.
    public let message: String

    private init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String {
        "DevelopmentCertificateAuthorityError(\(self.code)): \(self.message)"
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.code == rhs.code
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.code)
    }

    static func invalidName(_ name: String) -> Self {
        Self(
            .invalidName,
            "'\(name)' cannot be put in a development TLS certificate; use ASCII DNS names and IPv4/IPv6 literals"
        )
    }

    static func cannotCreateDirectory(_ path: String, reason: String) -> Self {
        Self(.cannotCreateDirectory, "cannot create the development certificate directory \(path): \(reason)")
    }

    static func cannotWriteFile(_ path: String, errno code: Int32) -> Self {
        Self(.cannotWriteFile, "cannot write \(path): \(String(cString: strerror(code))) (errno \(code))")
    }

    static func cannotIssueCertificate(_ reason: String) -> Self {
        Self(.cannotIssueCertificate, "cannot issue a development certificate: \(reason)")
    }
}
