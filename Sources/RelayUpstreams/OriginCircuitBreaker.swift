/// Stops sending work to an origin that keeps failing, and lets one probe find out when it is back.
///
/// `closed` → (`failureThreshold` failures in a row) → `open` → (`coolDown` later, on the next `acquire`)
/// `halfOpen`, which admits exactly one probe → `closed` on a success, `open` again on a failure.
///
/// A pure state machine (STYLE.md rule 1): time is a parameter, so tests drive it with made-up instants; the owner
/// keeps it behind a lock. A failure is "the origin did not answer usefully after retries" (transport errors, 5xx,
/// 429); any other answer, a 4xx included, is a success: the origin is up.
public struct OriginCircuitBreaker: Sendable {
    public typealias Instant = ContinuousClock.Instant

    /// Thresholds.
    public struct Configuration: Sendable, Hashable {
        /// Consecutive failures that open the circuit.
        public var failureThreshold: Int
        /// How long the circuit stays open before one probe may go through.
        public var coolDown: Duration

        public init(failureThreshold: Int = 5, coolDown: Duration = .seconds(10)) {
            self.failureThreshold = max(1, failureThreshold)
            self.coolDown = coolDown
        }
    }

    /// Where the circuit stands.
    public enum State: Sendable, Hashable {
        case closed(consecutiveFailures: Int)
        case open(until: Instant)
        /// `probe` is the ticket of the probe in flight, nil while none is.
        case halfOpen(probe: Int?)
    }

    /// What `acquire` allows.
    public enum Permission: Sendable, Hashable {
        /// Go ahead.
        case allowed
        /// Go ahead as the one probe; report its outcome, or `abandonProbe(ticket)` if it never reached the origin.
        case probe(ticket: Int)
        /// Fail fast: the origin is considered down.
        case rejected
    }

    public let configuration: Configuration
    public private(set) var state: State = .closed(consecutiveFailures: 0)
    private var nextTicket = 1

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// Asks to send new work to the origin at `now`.
    public mutating func acquire(now: Instant) -> Permission {
        switch state {
        case .closed:
            return .allowed
        case .open(let until):
            guard now >= until else { return .rejected }
            return admitProbe()
        case .halfOpen(let probe):
            return probe == nil ? admitProbe() : .rejected
        }
    }

    /// The origin answered (any call, probe or not).
    public mutating func recordSuccess() {
        switch state {
        case .closed, .halfOpen:
            state = .closed(consecutiveFailures: 0)
        case .open:
            // A late answer to work admitted before the circuit opened does not shorten the cool-down.
            break
        }
    }

    /// The origin failed a call at `now` (after the call's own retries).
    public mutating func recordFailure(now: Instant) {
        switch state {
        case .closed(let failures):
            let failures = failures + 1
            state =
                failures >= configuration.failureThreshold
                ? .open(until: now + configuration.coolDown) : .closed(consecutiveFailures: failures)
        case .halfOpen:
            state = .open(until: now + configuration.coolDown)
        case .open:
            break
        }
    }

    /// The probe with `ticket` ended without an answer either way (cancelled first): let another probe go.
    public mutating func abandonProbe(_ ticket: Int) {
        if case .halfOpen(ticket?) = state {
            state = .halfOpen(probe: nil)
        }
    }

    private mutating func admitProbe() -> Permission {
        let ticket = nextTicket
        nextTicket += 1
        state = .halfOpen(probe: ticket)
        return .probe(ticket: ticket)
    }
}
