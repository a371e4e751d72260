internal import CLZ4

/// LZ4 frames (the `.lz4` file format) with the content size and an XXH32 content checksum in every frame.
///
/// The only type that calls liblz4 (STYLE.md rule 9). Frames are what `lz4 -d` reads, so an operator can inspect a
/// stored blob with the stock CLI.
public enum LZ4FrameCodec {
    /// The largest frame header liblz4 writes (`LZ4F_HEADER_SIZE_MAX`): read this many bytes to learn the size.
    public static let maximumHeaderSize = Int(LZ4F_HEADER_SIZE_MAX)

    /// One LZ4 frame holding `bytes`: header with content size, linked 64 KiB blocks, end mark, content checksum.
    public static func compress(_ bytes: [UInt8]) -> [UInt8] {
        var preferences = LZ4F_preferences_t()
        preferences.frameInfo.contentSize = UInt64(bytes.count)
        preferences.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled
        preferences.frameInfo.blockSizeID = LZ4F_max64KB
        preferences.frameInfo.blockMode = LZ4F_blockLinked
        preferences.compressionLevel = 0  // the fast default: stores should not cost more than the disk they save

        let bound = LZ4F_compressFrameBound(bytes.count, &preferences)
        var frame = [UInt8](repeating: 0, count: bound)
        let written = frame.withUnsafeMutableBytes { destination in
            bytes.withUnsafeBytes { source in
                LZ4F_compressFrame(
                    destination.baseAddress,
                    destination.count,
                    source.baseAddress,
                    source.count,
                    &preferences
                )
            }
        }
        // With a destination of compressFrameBound bytes and valid preferences liblz4 has no failure mode but
        // allocation failure; there is no frame to return then.
        precondition(LZ4F_isError(written) == 0, "LZ4F_compressFrame: \(errorName(written))")
        frame.removeSubrange(written...)
        return frame
    }

    /// The content of one whole frame, its content checksum verified.
    ///
    /// - Throws: `.corrupt(nil)` when the frame does not decode, is truncated, is followed by other bytes, fails its
    ///   checksum or does not match the size its header declares.
    public static func decompress(_ frame: [UInt8]) throws(StoreError) -> [UInt8] {
        let context = try DecompressionContext()
        // Array.withUnsafeBytes rethrows untyped errors: carry the typed one out in a Result.
        let result = frame.withUnsafeBytes { source in
            Result { () throws(StoreError) -> [UInt8] in try context.decompress(source) }
        }
        return try result.get()
    }

    /// The content size a frame header declares, from the first bytes of a frame (`maximumHeaderSize` suffice).
    /// `nil` when the bytes are not a valid header or the frame does not declare its size.
    public static func contentSize(ofFrameHeader header: [UInt8]) -> Int? {
        guard let context = try? DecompressionContext() else { return nil }
        return header.withUnsafeBytes { source in
            guard let (info, _) = try? context.frameInfo(source), info.contentSize > 0,
                info.contentSize <= UInt64(Int.max)
            else { return nil }
            return Int(info.contentSize)
        }
    }

    fileprivate static func errorName(_ code: Int) -> String {
        guard let name = LZ4F_getErrorName(code) else { return "unknown LZ4F error" }
        return String(cString: name)
    }
}

/// Owns one `LZ4F_dctx` for the duration of one frame.
private final class DecompressionContext {
    private let context: OpaquePointer

    init() throws(StoreError) {
        var context: OpaquePointer?
        let result = LZ4F_createDecompressionContext(&context, UInt32(LZ4F_VERSION))
        guard LZ4F_isError(result) == 0, let context else {
            throw .corrupt(nil, reason: "LZ4F_createDecompressionContext: \(LZ4FrameCodec.errorName(result))")
        }
        self.context = context
    }

    deinit {
        LZ4F_freeDecompressionContext(context)
    }

    /// Parses the header; returns the frame info and how many bytes it took.
    func frameInfo(_ source: UnsafeRawBufferPointer) throws(StoreError) -> (LZ4F_frameInfo_t, Int) {
        var info = LZ4F_frameInfo_t()
        var consumed = source.count
        let result = LZ4F_getFrameInfo(context, &info, source.baseAddress, &consumed)
        guard LZ4F_isError(result) == 0 else {
            throw .corrupt(nil, reason: "LZ4 frame header: \(LZ4FrameCodec.errorName(result))")
        }
        return (info, consumed)
    }

    func decompress(_ source: UnsafeRawBufferPointer) throws(StoreError) -> [UInt8] {
        guard !source.isEmpty else { throw .corrupt(nil, reason: "empty LZ4 frame") }
        let (info, headerSize) = try frameInfo(source)

        // The header is not trusted for an allocation: LZ4 cannot expand a byte into more than 255, so a declared
        // size beyond that is a damaged header, not a reason to allocate gigabytes.
        let plausibleLimit = UInt64(source.count) &* 255 &+ 65_536
        let declared: Int?
        if info.contentSize > 0 {
            guard info.contentSize <= plausibleLimit else {
                throw .corrupt(nil, reason: "LZ4 frame declares \(info.contentSize) bytes in \(source.count)")
            }
            declared = Int(info.contentSize)
        } else {
            declared = nil  // a frame from elsewhere (e.g. `lz4` CLI on a pipe): grow as it decodes
        }

        var output = [UInt8](repeating: 0, count: max(declared ?? source.count * 3, 1))
        var produced = 0
        var offset = headerSize
        while true {
            if produced == output.count && declared == nil {
                output.append(contentsOf: repeatElement(0, count: output.count))
            }
            var sourceSize = source.count - offset
            var destinationSize = output.count - produced
            let hint = output.withUnsafeMutableBytes { destination in
                LZ4F_decompress(
                    context,
                    destination.baseAddress! + produced,
                    &destinationSize,
                    source.baseAddress! + offset,
                    &sourceSize,
                    nil
                )
            }
            guard LZ4F_isError(hint) == 0 else {
                throw .corrupt(nil, reason: "LZ4 frame: \(LZ4FrameCodec.errorName(hint))")
            }
            offset += sourceSize
            produced += destinationSize
            if hint == 0 { break }  // end mark and checksum read and verified
            if sourceSize == 0 && destinationSize == 0 {
                // No progress: either the output is full (grow it, unless the header promised this size) or liblz4
                // waits for input that is not there.
                guard produced == output.count else { throw .corrupt(nil, reason: "LZ4 frame truncated") }
                if declared != nil {
                    throw .corrupt(nil, reason: "LZ4 frame longer than its declared \(output.count) bytes")
                }
            }
        }
        guard offset == source.count else {
            throw .corrupt(nil, reason: "\(source.count - offset) bytes after the LZ4 frame")
        }
        if let declared, produced != declared {
            throw .corrupt(nil, reason: "LZ4 frame holds \(produced) bytes, header declares \(declared)")
        }
        output.removeSubrange(produced...)
        return output
    }
}
