import RelayCore
import RelayHTTP
import RelayJobs
import RelayUpstreams
import ServiceLifecycle

/// Runs the webhook dispatcher in the ServiceGroup: on graceful shutdown it stops taking deliveries and gives the
/// pending ones the dispatcher's grace period. Listed before the listeners, so it stops after them.
struct WebhookService: Service {
    let dispatcher: WebhookDispatcher

    func run() async throws {
        await withGracefulShutdownHandler {
            await dispatcher.run()
        } onGracefulShutdown: {
            dispatcher.shutdown()
        }
    }
}

/// The HTTP layer's view of the dispatcher.
struct DispatchingWebhookSink: WebhookSink {
    let dispatcher: WebhookDispatcher

    func validate(url: String) -> FalError? {
        dispatcher.validate(url: url)
    }

    func register(request: RelayRequest, url: String) {
        dispatcher.register(request: request, url: url)
    }

    var jwks: JSONValue? { dispatcher.jwks }
}
