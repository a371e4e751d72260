import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// SIGINT/SIGTERM while a request runs: the first cancels the work (which cancels the request), a second exits at once.
final class InterruptSignals: Sendable {
    private let state = Mutex<(signal: Int32?, sources: [any DispatchSourceSignal])>((nil, []))
    private static let queue = DispatchQueue(label: "media-relay.submit.signals")

    /// The first signal received, if any.
    var received: Int32? { state.withLock { $0.signal } }

    func install(_ onFirst: @escaping @Sendable () -> Void) {
        var sources: [any DispatchSourceSignal] = []
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: Self.queue)
            source.setEventHandler { [weak self] in
                guard let self else { return }
                let first = self.state.withLock { state -> Bool in
                    guard state.signal == nil else { return false }
                    state.signal = number
                    return true
                }
                if first {
                    onFirst()
                } else {
                    _exit(128 + number)
                }
            }
            source.resume()
            sources.append(source)
        }
        state.withLock { $0.sources = sources }
    }

    func uninstall() {
        state.withLock { state in
            for source in state.sources { source.cancel() }
            state.sources = []
        }
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
    }
}
