import NIOCore
import RelayCore

/// The compact list of every manifest the index knew at one instant (`results/index.snapshot`), so a restart reads
/// one file instead of opening 100,000.
///
/// Layout (little-endian): magic "RSNP", version u16, reserved u16, createdAt f64, count u32, then per manifest
/// key (16), storedAt f64, expiresAt f64, file size u32, digest count u16, the digests (16 each); last a u64
/// XXH3 checksum of everything before it. `createdAt` is taken before the index is read, so every shard directory
/// changed after it (mtime newer) is rescanned at load.
struct ResultManifestSnapshot: Sendable {
    static let magic: [UInt8] = Array("RSNP".utf8)
    static let version: UInt16 = 1
    /// Key, two times, size and digest count; the digests follow.
    static let fixedRecordSize = 16 + 8 + 8 + 4 + 2

    struct Record: Sendable, Hashable {
        var key: RequestKey
        var storedAt: Double
        var expiresAt: Double
        var size: Int
        var digests: [Digest128]

        /// The shard (`results/<hex[0..2]>`) as a number: the key's first byte.
        var shard: Int { Int(key.digest.high >> 56) }
    }

    var createdAt: Double
    var records: [Record]

    func encoded() -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: 24 + records.count * 56)
        buffer.writeBytes(Self.magic)
        buffer.writeInteger(Self.version, endianness: .little)
        buffer.writeInteger(UInt16(0), endianness: .little)
        buffer.writeInteger(createdAt.bitPattern, endianness: .little)
        buffer.writeInteger(UInt32(clamping: records.count), endianness: .little)
        for record in records.prefix(Int(UInt32.max)) {
            buffer.writeInteger(record.key.digest.high, endianness: .big)
            buffer.writeInteger(record.key.digest.low, endianness: .big)
            buffer.writeInteger(record.storedAt.bitPattern, endianness: .little)
            buffer.writeInteger(record.expiresAt.bitPattern, endianness: .little)
            buffer.writeInteger(UInt32(clamping: record.size), endianness: .little)
            let digests = record.digests.prefix(Int(UInt16.max))
            buffer.writeInteger(UInt16(digests.count), endianness: .little)
            for digest in digests {
                buffer.writeInteger(digest.high, endianness: .big)
                buffer.writeInteger(digest.low, endianness: .big)
            }
        }
        buffer.writeInteger(ResultManifest.checksum(buffer.readableBytesView), endianness: .little)
        return buffer
    }

    init(createdAt: Double, records: [Record]) {
        self.createdAt = createdAt
        self.records = records
    }

    init(decoding file: ByteBuffer) throws(ResultManifestError) {
        guard file.readableBytes >= 28,
            let stored = file.getInteger(
                at: file.readerIndex + file.readableBytes - 8,
                endianness: .little,
                as: UInt64.self
            ),
            var buffer = file.getSlice(at: file.readerIndex, length: file.readableBytes - 8)
        else { throw .truncated }
        guard ResultManifest.checksum(buffer.readableBytesView) == stored else { throw .init("checksum mismatch") }
        guard buffer.readBytes(length: 4) == Self.magic else { throw .init("not an index snapshot") }
        guard let version = buffer.readInteger(endianness: .little, as: UInt16.self), version == Self.version else {
            throw .init("unsupported snapshot version")
        }
        guard buffer.readInteger(endianness: .little, as: UInt16.self) != nil,
            let createdAt = buffer.readInteger(endianness: .little, as: UInt64.self),
            let count = buffer.readInteger(endianness: .little, as: UInt32.self)
        else { throw .truncated }
        var records: [Record] = []
        records.reserveCapacity(min(Int(count), buffer.readableBytes / Self.fixedRecordSize))
        // One readSlice-free pass over raw bytes: ByteBuffer's per-integer checks cost more than the parse itself.
        let parsed: Result<[Record], ResultManifestError> = buffer.withUnsafeReadableBytes { bytes in
            var offset = 0
            func u64be() -> UInt64 {
                defer { offset += 8 }
                return UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
            }
            func u64le() -> UInt64 {
                defer { offset += 8 }
                return UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
            }
            for _ in 0..<count {
                guard bytes.count - offset >= Self.fixedRecordSize else { return .failure(.truncated) }
                let key = Digest128(high: u64be(), low: u64be())
                let storedAt = Double(bitPattern: u64le())
                let expiresAt = Double(bitPattern: u64le())
                let size = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
                let digestCount = Int(
                    UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt16.self))
                )
                offset += 6
                guard bytes.count - offset >= digestCount * 16 else { return .failure(.truncated) }
                var digests: [Digest128] = []
                digests.reserveCapacity(digestCount)
                for _ in 0..<digestCount { digests.append(Digest128(high: u64be(), low: u64be())) }
                records.append(
                    Record(
                        key: RequestKey(digest: key),
                        storedAt: storedAt,
                        expiresAt: expiresAt,
                        size: Int(size),
                        digests: digests
                    )
                )
            }
            guard offset == bytes.count else {
                return .failure(.init("\(bytes.count - offset) bytes after the last record"))
            }
            return .success(records)
        }
        self.createdAt = Double(bitPattern: createdAt)
        self.records = try parsed.get()
    }
}
