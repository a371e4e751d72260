public import NIOCore
import NIOPosix
public import NIOSSL

/// A complete response to a setup request (submit a job, learn a file's size): head and whole body.
public struct OneShotResponse: Sendable {
    public var head: ResponseHead
    public var body: ByteBuffer

    public var bodyText: String { String(buffer: body) }
}

/// Sends one request on a connection of its own and collects the whole response; for setup, not for load.
public enum OneShotRequest {
    public static func send(
        _ plan: RequestPlan,
        on group: any EventLoopGroup,
        tls: NIOSSLContext?,
        timeoutSeconds: Int64 = 30
    ) async throws -> OneShotResponse {
        let url = plan.url
        let address = try SocketAddress.makeAddressResolvingHost(url.host, port: url.port)
        let loop = group.next()
        let promise = loop.makePromise(of: OneShotResponse.self)
        let request = plan.encode(body: plan.body, allocator: ByteBufferAllocator())
        let expectsNoBody = plan.method == "HEAD"
        let serverHostname = url.hostIsIPAddress ? nil : url.host
        let channel = try await ClientBootstrap(group: loop)
            .connectTimeout(.seconds(timeoutSeconds))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    if let tls {
                        try pipeline.addHandler(NIOSSLClientHandler(context: tls, serverHostname: serverHostname))
                    }
                    try pipeline.addHandler(
                        OneShotHandler(request: request, expectsNoBody: expectsNoBody, promise: promise)
                    )
                }
            }
            .connect(to: address)
            .get()
        let timeout = loop.scheduleTask(in: .seconds(timeoutSeconds)) {
            promise.fail(ChannelError.connectTimeout(.seconds(timeoutSeconds)))
            channel.close(promise: nil)
        }
        defer { timeout.cancel() }
        return try await promise.futureResult.get()
    }
}

/// Sends the request on activation and completes the promise with the first complete response.
private final class OneShotHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let request: ByteBuffer
    private let promise: EventLoopPromise<OneShotResponse>
    private var parser = ResponseParser(options: .init(emitHead: true, emitBody: true))
    private var head: ResponseHead?
    private var body = ByteBuffer()
    private var done = false

    init(request: ByteBuffer, expectsNoBody: Bool, promise: EventLoopPromise<OneShotResponse>) {
        self.request = request
        self.promise = promise
        parser.expectsNoBody = expectsNoBody
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(Self.wrapOutboundOut(request), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = Self.unwrapInboundIn(data)
        do {
            while !done, let event = try parser.next(&buffer) {
                switch event {
                case .head(let value): head = value
                case .body(var chunk): body.writeBuffer(&chunk)
                case .end: finish(context: context)
                }
            }
        } catch {
            done = true
            promise.fail(error)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done {
            if (try? parser.finish()) != nil {
                finish(context: context)
            } else {
                done = true
                promise.fail(ResponseParseError.truncated)
            }
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !done {
            done = true
            promise.fail(error)
        }
        context.close(promise: nil)
    }

    private func finish(context: ChannelHandlerContext) {
        done = true
        promise.succeed(OneShotResponse(head: head ?? ResponseHead(status: 0, headers: []), body: body))
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension OneShotHandler: Sendable {}
