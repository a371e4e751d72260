@_spi(CustomByteBufferAllocator) import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// The `ByteBufferAllocator` of TLS connections: buffers of 16 to 64 KiB get pages of their own (`mmap`), every other
/// size comes from `malloc` as usual.
///
/// Why: swift-nio-ssl gives every connection a 32 KiB plaintext read buffer and a 16 KiB ciphertext write buffer and
/// keeps both for the connection's life, while an idle stream (an SSE watcher) touches only their first page. From the
/// heap such buffers land on pages other connections' handshakes already touched and freed, so each idle TLS
/// connection held ~2–3 KB more than it uses; with pages of their own only the touched ones count, and closing the
/// connection gives them back to the system at once. BoringSSL's own allocations are unaffected.
///
/// A mapping starts with a 16-byte header (its length and a marker), so `deallocate` tells mapped buffers from
/// `malloc`'s: glibc keeps a chunk's size in the 8 bytes before the pointer, which can never equal the marker. That
/// holds for glibc only (musl's allocator may keep user bytes there), so elsewhere this is NIO's default allocator.
enum PageBackedAllocator {
    /// Sizes in this range are mapped.
    static let mappedSizes = (16 * 1024)..<(64 * 1024)

    #if canImport(Glibc)
    static let allocator = ByteBufferAllocator(
        allocate: { size in pageBackedAllocate(size) },
        reallocate: { pointer, oldSize, newSize in pageBackedReallocate(pointer, oldSize, newSize) },
        deallocate: { pointer in pageBackedDeallocate(pointer) },
        copy: { destination, source, count in destination.copyMemory(from: source, byteCount: count) }
    )

    fileprivate static let header = 16
    fileprivate static let marker: UInt64 = 0x6d72_5f70_6167_6573  // "mr_pages"
    fileprivate static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Whether the storage at `pointer` (a buffer's first byte) is one of the mappings.
    static func isMapped(_ pointer: UnsafeMutableRawPointer) -> Bool {
        mapping(of: pointer) != nil
    }

    /// Whether `pointer` came from `pageBackedAllocate`'s mapping branch, and the mapping's length if so.
    fileprivate static func mapping(
        of pointer: UnsafeMutableRawPointer
    ) -> (base: UnsafeMutableRawPointer, length: Int)? {
        let base = pointer - header
        guard Int(bitPattern: base) & (pageSize - 1) == 0, base.load(fromByteOffset: 8, as: UInt64.self) == marker
        else {
            return nil
        }
        return (base, Int(base.load(as: UInt64.self)))
    }
    #else
    static let allocator = ByteBufferAllocator()
    #endif
}

#if canImport(Glibc)
private func pageBackedAllocate(_ size: Int) -> UnsafeMutableRawPointer? {
    guard PageBackedAllocator.mappedSizes.contains(size) else { return malloc(size) }
    let page = PageBackedAllocator.pageSize
    let length = (size + PageBackedAllocator.header + page - 1) / page * page
    guard let base = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), base != MAP_FAILED
    else {
        return malloc(size)  // out of mappings: the heap still works
    }
    base.storeBytes(of: UInt64(length), as: UInt64.self)
    base.storeBytes(of: PageBackedAllocator.marker, toByteOffset: 8, as: UInt64.self)
    return base + PageBackedAllocator.header
}

private func pageBackedDeallocate(_ pointer: UnsafeMutableRawPointer) {
    if let (base, length) = PageBackedAllocator.mapping(of: pointer) {
        munmap(base, length)
    } else {
        free(pointer)
    }
}

private func pageBackedReallocate(
    _ pointer: UnsafeMutableRawPointer?,
    _ oldSize: Int,
    _ newSize: Int
) -> UnsafeMutableRawPointer? {
    guard let pointer else { return pageBackedAllocate(newSize) }
    if PageBackedAllocator.mapping(of: pointer) == nil, !PageBackedAllocator.mappedSizes.contains(newSize) {
        return realloc(pointer, newSize)
    }
    guard let moved = pageBackedAllocate(newSize) else { return nil }
    moved.copyMemory(from: pointer, byteCount: min(oldSize, newSize))
    pageBackedDeallocate(pointer)
    return moved
}
#endif
