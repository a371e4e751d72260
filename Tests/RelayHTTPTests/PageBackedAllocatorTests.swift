import NIOCore
import Testing

@testable import RelayHTTP

/// The TLS connections' allocator: 16–64 KiB buffers on pages of their own, everything else from malloc, and bytes
/// kept whole across every move between the two.
@Suite struct PageBackedAllocatorTests {
    @Test(arguments: [1, 512, 16 * 1024 - 1, 16 * 1024, 32 * 1024, 64 * 1024 - 1, 64 * 1024, 300 * 1024])
    func buffersOfEverySizeHoldTheirBytes(capacity: Int) {
        var buffer = PageBackedAllocator.allocator.buffer(capacity: capacity)
        let bytes = (0..<capacity).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        buffer.writeBytes(bytes)
        #expect(buffer.readBytes(length: capacity) == bytes)
    }

    #if canImport(Glibc)
    @Test func onlyTheMappedRangeIsMapped() {
        for (capacity, mapped) in [
            (8 * 1024, false), (16 * 1024, true), (32 * 1024, true), (64 * 1024, false), (256 * 1024, false),
        ] {
            let buffer = PageBackedAllocator.allocator.buffer(capacity: capacity)
            let isMapped = buffer.withUnsafeReadableBytes { _ in
                buffer.withVeryUnsafeBytes {
                    PageBackedAllocator.isMapped(UnsafeMutableRawPointer(mutating: $0.baseAddress!))
                }
            }
            #expect(isMapped == mapped, "capacity \(capacity)")
        }
    }
    #endif

    /// Growing by writes crosses from malloc into a mapping and out again: 1 KiB → 16 → 32 → 64 → 128 KiB.
    @Test func growthAcrossTheRangeKeepsEveryByte() {
        var buffer = PageBackedAllocator.allocator.buffer(capacity: 1024)
        var expected: [UInt8] = []
        for round in 0..<130 {
            let chunk = [UInt8](repeating: UInt8(truncatingIfNeeded: round), count: 1000)
            buffer.writeBytes(chunk)
            expected += chunk
        }
        #expect(buffer.capacity >= 130_000)
        #expect(buffer.readBytes(length: buffer.readableBytes) == expected)
    }

    /// Copy-on-write of a mapped buffer (the TLS read buffer passed on while a slice is still held) copies it whole.
    @Test func aSharedMappedBufferCopiesOnWrite() {
        var first = PageBackedAllocator.allocator.buffer(capacity: 32 * 1024)
        first.writeString("held by someone else")
        let held = first
        first.writeString(", and more")
        #expect(String(buffer: held) == "held by someone else")
        #expect(String(buffer: first) == "held by someone else, and more")
    }
}
