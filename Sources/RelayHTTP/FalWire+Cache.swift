import NIOHTTP1
import RelayJobs

extension FalWire {
    /// `x-relay-cache` and RFC 9211 `Cache-Status`: how the request was served.
    static func cacheHeaders(_ request: RelayRequest) -> [(String, String)] {
        let headers = [("x-relay-cache", request.cacheOutcome.rawValue), ("cache-status", request.cacheStatus)]
        // In an origin pool: which account and which model generated it.
        guard let served = request.job.servedBy else { return headers }
        return headers + [("x-relay-upstream", served.header)]
    }

    /// `Cache-Control` request directives, lowercased, without values.
    static func cacheDirectives(_ headers: HTTPHeaders) -> Set<Substring> {
        var directives: Set<Substring> = []
        for value in headers["cache-control"] {
            for part in value.split(separator: ",") {
                let name = (part.split(separator: "=", maxSplits: 1).first ?? "").filter { $0 != " " && $0 != "\t" }
                directives.insert(Substring(name.lowercased()))
            }
        }
        return directives
    }
}
