import Foundation
import NIOCore
import NIOPosix
import RelayCore
import Testing

@testable import RelayStore

/// Jobs an origin accepted under its own id: the attachment record, and how `load` keeps such a job open.
@Suite("Request log attachments")
struct RequestLogAttachmentTests {
    static func attachment(
        job: UInt64,
        at: Timestamp = .now(),
        origin: String = "http://127.0.0.1:9"
    ) -> RequestLogRecord.Attachment {
        let base = origin + "/fal-ai/flux/requests/o-\(job)"
        return RequestLogRecord.Attachment(
            jobID: job,
            attachedAt: at,
            modelID: "fal-ai/flux/dev",
            input: ["prompt": "a lighthouse ✨", "seed": 7, "image_size": ["width": 512, "height": 512]],
            handle: .init(
                origin: origin,
                requestID: "o-\(job)",
                statusURL: base + "/status",
                responseURL: base,
                cancelURL: base + "/cancel"
            ),
            storeResult: true,
            storeRejection: false,
            coalesce: true
        )
    }

    @Test func attachmentAndBadGatewayRoundTrip() throws {
        let now = Timestamp(secondsSinceEpoch: 1_700_000_000.25)
        var other = Self.attachment(job: 2, at: now)
        other.storeResult = false
        other.storeRejection = true
        other.coalesce = false
        let records: [RequestLogRecord] = [
            .attached(Self.attachment(job: 1, at: now)),
            .attached(other),
            .finished(
                jobID: 1,
                at: now,
                outcome: .failure(.badGateway("origin http://o answered HTTP 500 to result: boom"))
            ),
            .finished(jobID: 2, at: now, outcome: .failure(.badGateway("odd", type: "runner_disconnected"))),
        ]
        var buffer = ByteBufferAllocator().buffer(capacity: 0)
        for record in records { #expect(record.frame(into: &buffer)) }
        for record in records {
            guard case .record(let decoded) = RequestLogRecord.readFrame(&buffer) else {
                Issue.record("\(record) did not decode")
                return
            }
            #expect(decoded == record)
        }
        guard case .end = RequestLogRecord.readFrame(&buffer) else {
            Issue.record("trailing bytes")
            return
        }
        // Damage in an attachment is caught like in any record.
        var whole = ByteBufferAllocator().buffer(capacity: 0)
        RequestLogRecord.attached(Self.attachment(job: 3)).frame(into: &whole)
        let index = whole.readableBytes - 3
        whole.setInteger(whole.getInteger(at: index, as: UInt8.self)! ^ 0x01, at: index)
        guard case .corrupt = RequestLogRecord.readFrame(&whole) else {
            Issue.record("flip not detected")
            return
        }
    }

    @Test func anAttachedJobInFlightStaysOpenAcrossLoads() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let log = RequestLog(dataDirectory: directory.path, threadPool: .singleton, retentionSeconds: 3600)
        _ = try await log.load(interrupted: RequestLogTests.interrupted)
        let now = Timestamp.now()
        #expect(
            await RequestLogTests.append(
                log,
                [
                    // Job 1: attached, in flight, two requests (one cancelled).
                    .created(RequestLogTests.creation(1)), .attached(Self.attachment(job: 1)),
                    .created(RequestLogTests.creation(2, job: 1, owner: "key-b")),
                    .cancelled(requestID: "req-2", at: now),
                    // Job 3: attached, then finished: nothing to follow.
                    .created(RequestLogTests.creation(3)), .attached(Self.attachment(job: 3)),
                    .finished(jobID: 3, at: now, outcome: .success(result: ["ok": true], inferenceSeconds: nil)),
                    // Job 4: in flight, never attached (a synthetic job, or the crash came before the origin answered).
                    .created(RequestLogTests.creation(4)),
                    // Job 5: attached, its only request cancelled.
                    .created(RequestLogTests.creation(5)), .attached(Self.attachment(job: 5)),
                    .cancelled(requestID: "req-5", at: now),
                ]
            )
        )

        for round in 1...2 {
            // The second round reads the compacted segment the first wrote: the job must still be open there.
            let reopened = RequestLog(dataDirectory: directory.path, threadPool: .singleton, retentionSeconds: 3600)
            let (requests, report) = try await reopened.load(interrupted: RequestLogTests.interrupted)
            let byID = Dictionary(uniqueKeysWithValues: requests.map { ($0.creation.id, $0) })
            let attachedAt = try #require(byID["req-1"]?.attachment?.attachedAt)
            #expect(
                byID["req-1"]?.interrupted == true
                    && byID["req-1"]?.attachment == Self.attachment(job: 1, at: attachedAt),
                "round \(round)"
            )
            #expect(byID["req-2"]?.cancelled == true && byID["req-2"]?.attachment == nil, "round \(round)")
            #expect(
                byID["req-3"]?.outcome == .success(result: ["ok": true], inferenceSeconds: nil)
                    && byID["req-3"]?.attachment == nil
            )
            // The unattached job's interruption is on record from the first load on: only the attached one stays open.
            #expect(byID["req-4"]?.interrupted == (round == 1) && byID["req-4"]?.attachment == nil)
            #expect(byID["req-4"]?.outcome == RequestLogTests.interrupted)
            #expect(byID["req-5"]?.cancelled == true && byID["req-5"]?.attachment == nil)
            #expect(report.interrupted == (round == 1 ? 2 : 1) && report.reattachable == 1, "round \(round): \(report)")
        }

        // Once its end is recorded, the job is closed for good.
        let last = RequestLog(dataDirectory: directory.path, threadPool: .singleton, retentionSeconds: 3600)
        _ = try await last.load(interrupted: RequestLogTests.interrupted)
        #expect(
            await RequestLogTests.append(
                last,
                [.finished(jobID: 1, at: .now(), outcome: .failure(.badGateway("gone")))]
            )
        )
        let closed = RequestLog(dataDirectory: directory.path, threadPool: .singleton, retentionSeconds: 3600)
        let (requests, report) = try await closed.load(interrupted: RequestLogTests.interrupted)
        let first = requests.first { $0.creation.id == "req-1" }
        #expect(
            first?.attachment == nil && first?.interrupted == false && first?.outcome == .failure(.badGateway("gone"))
        )
        #expect(report.reattachable == 0)
    }
}
