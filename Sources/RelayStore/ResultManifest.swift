import NIOCore
import RelayCore

/// One cached result as it lies on disk (`results/<hex[0..2]>/<keyhex>`): a small length-prefixed binary document.
///
/// Layout (little-endian):
/// ```
///  0  magic "RMAN"            4
///  4  version (1)             u16
///  6  outcome kind            u8   1 success, 2 rejection
///  7  flags                   u8   bit 0: inference seconds present
///  8  key digest              16   big-endian, as its hex reads
/// 24  storedAt                f64  seconds since 1970
/// 32  expiresAt               f64
/// 40  total length            u32  whole file, checksum included
/// 44  digest count            u16
/// 46  reserved (0)            u16
/// 48  blob digests            16 × count
///     model id                u32 length + UTF-8
///     canonical input         u32 length + bytes
///     success:   [inference seconds f64]  result JSON (u32 length + compact JSON)
///     rejection: status u16, error type (u32 length + UTF-8, 0xFFFFFFFF for none), body JSON (u32 length + JSON)
///     checksum                u64  XXH3 of everything before it
/// ```
/// The fixed header carries everything the in-memory index needs (key, times, digests), so a start-up scan reads a
/// few dozen bytes per file and the rest is decoded only when the entry is first looked up.
struct ResultManifest: Sendable, Hashable {
    static let magic: [UInt8] = Array("RMAN".utf8)
    static let version: UInt16 = 1
    static let headerSize = 48
    static let checksumSize = 8
    /// Enough to hold the header of any manifest with up to 253 blob digests.
    static let headerReadSize = 4096

    let key: RequestKey
    let result: CachedResult
    /// Blobs the result's URLs point at (`/files/<digest>.<ext>`), in order of first mention.
    let digests: [Digest128]

    init(key: RequestKey, result: CachedResult, digests: [Digest128]) {
        self.key = key
        self.result = result
        self.digests = digests
    }

    /// What the index keeps of a manifest without decoding its body.
    struct Header: Sendable, Hashable {
        var key: RequestKey
        var storedAt: Double
        var expiresAt: Double
        var totalLength: Int
        var digests: [Digest128]
    }

    // MARK: - Encoding

    /// The file's bytes; nil for an outcome the format cannot rebuild (a rejection other than a 422 validation
    /// error, which the job table never stores).
    func encoded() -> ByteBuffer? {
        let kind: UInt8
        var flags: UInt8 = 0
        switch result.outcome {
        case .success(_, let seconds):
            kind = 1
            if seconds != nil { flags |= 1 }
        case .rejected(let error):
            guard error.status == 422 else { return nil }
            kind = 2
        }
        guard digests.count <= Int(UInt16.max) else { return nil }

        var buffer = ByteBufferAllocator().buffer(capacity: 256 + result.canonicalInput.count)
        buffer.writeBytes(Self.magic)
        buffer.writeInteger(Self.version, endianness: .little)
        buffer.writeInteger(kind)
        buffer.writeInteger(flags)
        Self.write(key.digest, into: &buffer)
        buffer.writeInteger(result.storedAt.secondsSinceEpoch.bitPattern, endianness: .little)
        buffer.writeInteger(result.expiresAt.secondsSinceEpoch.bitPattern, endianness: .little)
        let lengthIndex = buffer.writerIndex
        buffer.writeInteger(UInt32(0), endianness: .little)  // total length, patched below
        buffer.writeInteger(UInt16(digests.count), endianness: .little)
        buffer.writeInteger(UInt16(0), endianness: .little)
        for digest in digests { Self.write(digest, into: &buffer) }

        guard Self.writeField(Array(result.modelID.utf8), into: &buffer),
            Self.writeField(result.canonicalInput, into: &buffer)
        else { return nil }
        switch result.outcome {
        case .success(let value, let seconds):
            if let seconds { buffer.writeInteger(seconds.bitPattern, endianness: .little) }
            guard Self.writeField(value.serialized(), into: &buffer) else { return nil }
        case .rejected(let error):
            buffer.writeInteger(UInt16(clamping: error.status), endianness: .little)
            if let type = error.errorType {
                guard Self.writeField(Array(type.utf8), into: &buffer) else { return nil }
            } else {
                buffer.writeInteger(UInt32.max, endianness: .little)
            }
            guard Self.writeField(error.body.serialized(), into: &buffer) else { return nil }
        }

        let total = buffer.readableBytes + Self.checksumSize
        guard total <= Int(UInt32.max) else { return nil }
        buffer.setInteger(UInt32(total), at: lengthIndex, endianness: .little)
        let checksum = Self.checksum(buffer.readableBytesView)
        buffer.writeInteger(checksum, endianness: .little)
        return buffer
    }

    // MARK: - Decoding

    /// The fixed header and digests from the start of a file (at least `headerSize + 16 × count` bytes of it).
    /// Checks magic, version and that the file is as long as the header says; not the checksum.
    static func decodeHeader(_ prefix: ByteBuffer, fileSize: Int) throws(ResultManifestError) -> Header {
        var buffer = prefix
        guard buffer.readableBytes >= headerSize else { throw .init("shorter than its header") }
        guard buffer.readBytes(length: 4) == magic else { throw .init("not a result manifest (bad magic)") }
        guard let version = buffer.readInteger(endianness: .little, as: UInt16.self) else { throw .truncated }
        guard version == Self.version else { throw .init("unsupported manifest version \(version)") }
        _ = buffer.readInteger(as: UInt16.self)  // kind and flags, checked by `decode`
        guard let key = readDigest(&buffer),
            let storedAt = buffer.readInteger(endianness: .little, as: UInt64.self),
            let expiresAt = buffer.readInteger(endianness: .little, as: UInt64.self),
            let total = buffer.readInteger(endianness: .little, as: UInt32.self),
            let count = buffer.readInteger(endianness: .little, as: UInt16.self),
            buffer.readInteger(endianness: .little, as: UInt16.self) != nil
        else { throw .truncated }
        guard Int(total) == fileSize else {
            throw .init("file is \(fileSize) bytes, its header says \(total)")
        }
        guard headerSize + Int(count) * 16 + checksumSize <= fileSize else { throw .truncated }
        guard buffer.readableBytes >= Int(count) * 16 else { throw .truncated }
        var digests: [Digest128] = []
        digests.reserveCapacity(Int(count))
        for _ in 0..<count {
            guard let digest = readDigest(&buffer) else { throw .truncated }
            digests.append(digest)
        }
        return Header(
            key: RequestKey(digest: key),
            storedAt: Double(bitPattern: storedAt),
            expiresAt: Double(bitPattern: expiresAt),
            totalLength: Int(total),
            digests: digests
        )
    }

    /// A whole manifest file, checksum verified. `expectedKey` is the key its file name says.
    static func decode(_ file: ByteBuffer, expectedKey: RequestKey) throws(ResultManifestError) -> ResultManifest {
        let header = try decodeHeader(file, fileSize: file.readableBytes)
        guard header.key == expectedKey else {
            throw .init("holds key \(header.key), its file name says \(expectedKey)")
        }
        guard
            let stored = file.getInteger(
                at: file.readerIndex + file.readableBytes - checksumSize,
                endianness: .little,
                as: UInt64.self
            ),
            let body = file.getSlice(at: file.readerIndex, length: file.readableBytes - checksumSize),
            checksum(body.readableBytesView) == stored
        else { throw .init("checksum mismatch") }

        var buffer = body
        buffer.moveReaderIndex(forwardBy: 6)
        guard let kind = buffer.readInteger(as: UInt8.self), let flags = buffer.readInteger(as: UInt8.self) else {
            throw .truncated
        }
        buffer.moveReaderIndex(forwardBy: headerSize - 8 + header.digests.count * 16)
        guard let modelBytes = readField(&buffer), let canonicalInput = readField(&buffer) else { throw .truncated }
        guard let modelID = String(validating: modelBytes, as: UTF8.self) else { throw .init("model id is not UTF-8") }

        let outcome: CachedResult.Outcome
        switch kind {
        case 1:
            var seconds: Double?
            if flags & 1 != 0 {
                guard let bits = buffer.readInteger(endianness: .little, as: UInt64.self) else { throw .truncated }
                seconds = Double(bitPattern: bits)
            }
            guard let json = readField(&buffer) else { throw .truncated }
            outcome = .success(result: try parseJSON(json), inferenceSeconds: seconds)
        case 2:
            guard let status = buffer.readInteger(endianness: .little, as: UInt16.self),
                let typeLength = buffer.getInteger(at: buffer.readerIndex, endianness: .little, as: UInt32.self)
            else { throw .truncated }
            if typeLength == UInt32.max {
                buffer.moveReaderIndex(forwardBy: 4)
            } else {
                guard readField(&buffer) != nil else { throw .truncated }
            }
            guard let json = readField(&buffer) else { throw .truncated }
            outcome = .rejected(try rejection(status: Int(status), body: try parseJSON(json)))
        default:
            throw .init("unknown outcome kind \(kind)")
        }
        guard buffer.readableBytes == 0 else {
            throw .init("\(buffer.readableBytes) unexpected bytes before the checksum")
        }

        let result = CachedResult(
            modelID: modelID,
            canonicalInput: canonicalInput,
            outcome: outcome,
            storedAt: Timestamp(secondsSinceEpoch: header.storedAt),
            expiresAt: Timestamp(secondsSinceEpoch: header.expiresAt)
        )
        return ResultManifest(key: header.key, result: result, digests: header.digests)
    }

    /// `FalError` is built only through its static members: a stored 422 body is turned back into its issues.
    private static func rejection(status: Int, body: JSONValue) throws(ResultManifestError) -> FalError {
        guard status == 422, let list = body["detail"]?.arrayValue else {
            throw .init("a stored rejection must be a 422 validation error, found \(status)")
        }
        var issues: [FalError.ValidationIssue] = []
        for item in list {
            guard let message = item["msg"]?.stringValue, let type = item["type"]?.stringValue,
                let location = item["loc"]?.arrayValue
            else { throw .init("malformed validation issue \(item)") }
            let path = location.map { $0.stringValue ?? $0.serializedString }
            issues.append(FalError.ValidationIssue(location: path, message: message, type: type))
        }
        return FalError.validation(issues)
    }

    // MARK: - Primitives

    private static func write(_ digest: Digest128, into buffer: inout ByteBuffer) {
        buffer.writeInteger(digest.high, endianness: .big)
        buffer.writeInteger(digest.low, endianness: .big)
    }

    static func readDigest(_ buffer: inout ByteBuffer) -> Digest128? {
        guard let high = buffer.readInteger(endianness: .big, as: UInt64.self),
            let low = buffer.readInteger(endianness: .big, as: UInt64.self)
        else { return nil }
        return Digest128(high: high, low: low)
    }

    /// u32 length + bytes; false when the field is too long for the format.
    private static func writeField(_ bytes: [UInt8], into buffer: inout ByteBuffer) -> Bool {
        guard bytes.count < Int(UInt32.max) else { return false }
        buffer.writeInteger(UInt32(bytes.count), endianness: .little)
        buffer.writeBytes(bytes)
        return true
    }

    private static func readField(_ buffer: inout ByteBuffer) -> [UInt8]? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, endianness: .little, as: UInt32.self),
            length != UInt32.max, buffer.readableBytes - 4 >= Int(length)
        else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        return buffer.readBytes(length: Int(length))
    }

    private static func parseJSON(_ bytes: [UInt8]) throws(ResultManifestError) -> JSONValue {
        do throws(JSONError) {
            // Deeper than a request may be: a result is built by code, not parsed from a client.
            return try JSONValue(parsing: bytes, maxDepth: 512)
        } catch {
            throw .init("stored JSON does not parse: \(error)")
        }
    }

    // MARK: - Checksum

    /// Integrity only (a flipped bit, a torn sector), not secrecy: XXH3 under a fixed, public secret.
    static func checksum(_ bytes: ByteBufferView) -> UInt64 {
        let digest =
            bytes.withContiguousStorageIfAvailable { buffer in
                checksumHasher.digest(UnsafeRawBufferPointer(buffer))
            } ?? checksumHasher.digest(Array(bytes))
        return digest.low
    }

    private static let checksumHasher: KeyedHasher = {
        // SplitMix64 from a constant: any fixed, well-mixed secret will do.
        var state: UInt64 = 0x5245_4C41_594D_414E  // "RELAYMAN"
        var secret: [UInt8] = []
        secret.reserveCapacity(KeyedHasher.secretSize)
        while secret.count < KeyedHasher.secretSize {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            for shift in stride(from: 0, to: 64, by: 8) { secret.append(UInt8(truncatingIfNeeded: z >> UInt64(shift))) }
        }
        return KeyedHasher(secret: secret)
    }()
}

/// Why a manifest or snapshot file was rejected; the file is then quarantined (manifests) or ignored (snapshots).
struct ResultManifestError: Error, Sendable, Hashable, CustomStringConvertible {
    let description: String

    init(_ description: String) {
        self.description = description
    }

    static let truncated = ResultManifestError("truncated")
}
