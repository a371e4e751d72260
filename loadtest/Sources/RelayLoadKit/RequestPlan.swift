import Foundation
import NIOCore

/// What every connection sends, described once and turned into bytes by each worker's `RequestSource`.
public struct RequestPlan: Sendable {
    /// How the request varies from one send to the next.
    public enum Variation: Sendable {
        /// The same bytes every time.
        case fixed
        /// A random single `Range: bytes=a-b` of 1…maxLength bytes within a file of `fileSize` bytes.
        case randomRange(fileSize: Int, maxLength: Int)
        /// A POST whose body is `bodyTemplate` with `{i}` replaced by a Zipf-drawn rank below `prompts`.
        case zipfBodies(bodyTemplate: String, prompts: Int, exponent: Double)
    }

    public var method: String
    public var url: TargetURL
    /// Extra header lines ("Name: value"), sent as given.
    public var headers: [String]
    public var body: String?
    public var variation: Variation
    /// Ask the server to close after the response (one connection per request).
    public var closeAfterResponse: Bool

    public init(
        method: String = "GET",
        url: TargetURL,
        headers: [String] = [],
        body: String? = nil,
        variation: Variation = .fixed,
        closeAfterResponse: Bool = false
    ) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.variation = variation
        self.closeAfterResponse = closeAfterResponse
    }

    /// The request head up to (not including) the blank line, without Content-Length.
    func headPrefix() -> String {
        var head = "\(method) \(url.target) HTTP/1.1\r\nHost: \(url.authority)\r\nUser-Agent: relay-load\r\n"
        for line in headers { head += line + "\r\n" }
        if closeAfterResponse { head += "Connection: close\r\n" }
        return head
    }

    /// One complete request with `body` (if any).
    func encode(body: String?, allocator: ByteBufferAllocator) -> ByteBuffer {
        var text = headPrefix()
        if let body {
            let bytes = body.utf8.count
            if !headers.contains(where: { $0.lowercased().hasPrefix("content-type:") }) {
                text += "Content-Type: application/json\r\n"
            }
            text += "Content-Length: \(bytes)\r\n\r\n" + body
        } else {
            text += "\r\n"
        }
        var buffer = allocator.buffer(capacity: text.utf8.count)
        buffer.writeString(text)
        return buffer
    }
}

/// One worker's request stream: prebuilt bytes where possible, so that a send costs no formatting.
///
/// Loop-confined, like the worker that owns it: it holds the worker's random generator.
struct RequestSource {
    private enum Mode {
        case fixed(ByteBuffer)
        case range(prefix: ByteBuffer, fileSize: Int, maxLength: Int)
        case bodies([ByteBuffer], ZipfDistribution)
    }

    private let mode: Mode
    private var random: SeededGenerator
    /// The rank of the last Zipf-drawn body, for reports of what was sent.
    private(set) var lastRank = 0

    init(plan: RequestPlan, seed: UInt64, allocator: ByteBufferAllocator) {
        random = SeededGenerator(seed: seed)
        switch plan.variation {
        case .fixed:
            mode = .fixed(plan.encode(body: plan.body, allocator: allocator))
        case .randomRange(let fileSize, let maxLength):
            var prefix = allocator.buffer(capacity: 256)
            prefix.writeString(plan.headPrefix())
            mode = .range(prefix: prefix, fileSize: max(1, fileSize), maxLength: max(1, maxLength))
        case .zipfBodies(let template, let prompts, let exponent):
            let buffers = (0..<prompts).map { rank in
                plan.encode(body: template.replacingOccurrences(of: "{i}", with: String(rank)), allocator: allocator)
            }
            mode = .bodies(buffers, ZipfDistribution(count: prompts, exponent: exponent))
        }
    }

    mutating func next(allocator: ByteBufferAllocator) -> ByteBuffer {
        switch mode {
        case .fixed(let bytes):
            return bytes
        case .range(let prefix, let fileSize, let maxLength):
            let length = Int.random(in: 1...min(maxLength, fileSize), using: &random)
            let start = Int.random(in: 0...(fileSize - length), using: &random)
            var buffer = allocator.buffer(capacity: prefix.readableBytes + 48)
            buffer.writeImmutableBuffer(prefix)
            buffer.writeStaticString("Range: bytes=")
            buffer.writeString(String(start))
            buffer.writeStaticString("-")
            buffer.writeString(String(start + length - 1))
            buffer.writeStaticString("\r\n\r\n")
            return buffer
        case .bodies(let buffers, let zipf):
            lastRank = zipf.sample(using: &random)
            return buffers[lastRank]
        }
    }
}
