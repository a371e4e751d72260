import AsyncHTTPClient
import Logging
import NIOCore
import RelayCluster
import RelayCore
import RelayHTTP
import RelayJobs
import RelayStore
import Synchronization

/// What the HTTP layer is given of the fleet (`FleetAccess`): the registry, blob copies from peers, the status.
final class ClusterFleetAccess: FleetAccess {
    let wiring: ClusterWiring
    let store: BlobStore
    /// The largest blob copied from a peer.
    let maxBlobBytes: Int
    /// Copies under way, by digest: concurrent misses for one blob share one copy.
    let copies = Mutex<[Digest128: Task<Bool, Never>]>([:])

    init(wiring: ClusterWiring, store: BlobStore, maxBlobBytes: Int) {
        self.wiring = wiring
        self.store = store
        self.maxBlobBytes = maxBlobBytes
    }

    var node: ClusterNode { wiring.node }
    var isAvailable: Bool { node.isAvailable }
    var peerToken: String { node.peerToken }

    func isLive(node id: String) -> Bool {
        node.fleet.contains { $0.nodeID == id && $0.alive }
    }

    func request(_ id: String) async throws -> FleetRequest? {
        try await node.request(id)
    }

    func lookup(_ key: RequestKey) async throws -> (result: CachedResult?, runningElsewhere: Bool) {
        try await node.lookup(key)
    }

    func lookupOrClaim(
        _ key: RequestKey,
        registering: FleetRequest?
    ) async throws -> (result: CachedResult?, runningElsewhere: Bool) {
        try await node.lookupOrClaim(key, registering: registering)
    }

    func withdraw(_ registered: FleetRequest) {
        node.withdraw(registered.id, key: registered.key)
    }

    var nodeID: String { node.configuration.nodeID }

    func fetchBlob(_ digest: Digest128, mediaType: MediaType) async -> Bool {
        let task = copies.withLock { copies -> Task<Bool, Never> in
            if let running = copies[digest] { return running }
            let task = Task { await copy(digest, mediaType: mediaType) }
            copies[digest] = task
            return task
        }
        let copied = await task.value
        copies.withLock { copies in
            if copies[digest] == task { copies[digest] = nil }
        }
        return copied
    }

    /// Asks the nodes the registry names as holders, then every other live node, for the blob; stores the first
    /// copy whose digest checks out.
    /// A peer's blob, streamed into the store as an upload is (a file in `tmp/`, hashed as it arrives, linked into
    /// place): a copy of any size never sits in memory. Stored raw, as uploads are.
    private func receive(_ body: HTTPClientResponse.Body, mediaType: MediaType) async throws -> BlobRecord {
        let upload = store.makeUpload()
        let eventLoop = wiring.http.eventLoopGroup.next()
        do {
            var received = 0
            for try await chunk in body {
                received += chunk.readableBytes
                guard received <= maxBlobBytes else {
                    throw ClusterError.peer("the blob exceeds \(maxBlobBytes) bytes")
                }
                try await store.append(chunk, to: upload, eventLoop: eventLoop).get()
            }
            return try await store.finish(upload, mediaType: mediaType, eventLoop: eventLoop).get()
        } catch {
            store.discard(upload)
            throw error
        }
    }

    private func copy(_ digest: Digest128, mediaType: MediaType) async -> Bool {
        let registered = (try? await node.holders(of: digest)) ?? []
        let others = node.fleet.filter { $0.alive && $0.nodeID != node.configuration.nodeID }.map(\.nodeURL)
        var tried: Set<String> = []
        for url in registered + others where tried.insert(url).inserted {
            var request = HTTPClientRequest(url: "\(url)/files/\(digest.hex).\(mediaType.fileExtension)")
            request.headers.add(name: "x-relay-cluster-token", value: node.peerToken)
            do {
                let response = try await wiring.http.execute(request, timeout: .seconds(120))
                guard response.status == .ok else { continue }
                let record = try await receive(response.body, mediaType: mediaType)
                guard record.digest == digest else {
                    wiring.logger.error(
                        "a peer's copy of a blob does not match its digest; dropped",
                        metadata: ["digest": "\(digest)", "peer": "\(url)", "got": "\(record.digest)"]
                    )
                    _ = try? await store.remove(record.digest)
                    continue
                }
                node.holds(digest)
                return true
            } catch {
                wiring.logger.info(
                    "could not copy a blob from a peer",
                    metadata: ["digest": "\(digest)", "peer": "\(url)", "error": "\(error)"]
                )
            }
        }
        return false
    }

    func status() -> JSONValue {
        .object([
            "node_id": .string(node.configuration.nodeID),
            "node_url": .string(node.nodeURL),
            "database": .string(node.isAvailable ? "ok" : "unavailable"),
            "nodes": .array(
                node.fleet.map { member in
                    .object([
                        "node_id": .string(member.nodeID),
                        "node_url": .string(member.nodeURL),
                        "alive": .bool(member.alive),
                    ])
                }
            ),
            "generations_started": .number(Double(node.generationsStarted)),
        ])
    }
}
