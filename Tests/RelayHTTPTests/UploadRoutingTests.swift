import NIOCore
import NIOHTTP1
import RelayCore
import Testing

@testable import RelayHTTP

@Suite struct UploadRoutingTests {
    let router = Router(queueHosts: [HostPattern("127.0.0.1")!], runHosts: [HostPattern("localhost")!])
    let id = Digest128(hex: "602491bde843c35072527ad35c1e6cc6")!
    let digest = Digest128(hex: "8287ec0846956a9509ed13ee619199bb")!

    @Test(arguments: ["rest.fal.ai", "v3.fal.media", "127.0.0.1:8443", "localhost:8443"])
    func storageRoutesOnEveryHost(host: String) {
        #expect(
            router.route(method: .POST, host: host, uri: "/storage/upload/initiate?storage_type=gcs") == .uploadInitiate
        )
        #expect(
            router.route(method: .POST, host: host, uri: "/storage/auth/token?storage_type=fal-cdn-v3") == .storageToken
        )
        #expect(router.route(method: .POST, host: host, uri: "/files/upload") == .v3Upload)
        #expect(
            router.route(method: .PUT, host: host, uri: "/storage/upload/\(id.hex)/abcdef0123456789.ff00")
                == .uploadPut(id: id, token: "abcdef0123456789.ff00")
        )
        #expect(router.route(method: .GET, host: host, uri: "/files/uploads/\(id.hex)/photo.png") == .uploadAlias(id))
        #expect(router.route(method: .HEAD, host: host, uri: "/files/uploads/\(id.hex)") == .uploadAlias(id))
    }

    @Test func uploadRoutesDoNotCollideWithMediaFiles() {
        #expect(
            router.route(method: .GET, host: "127.0.0.1", uri: "/files/\(digest.hex).png")
                == .file(digest, fileExtension: "png")
        )
        #expect(router.route(method: .GET, host: "127.0.0.1", uri: "/files/upload") == .methodNotAllowed)
        #expect(router.route(method: .POST, host: "127.0.0.1", uri: "/files/\(digest.hex).png") == .methodNotAllowed)
        #expect(router.route(method: .GET, host: "127.0.0.1", uri: "/files/uploads/not-hex/x.png") == .notFound)
        #expect(
            router.route(method: .GET, host: "127.0.0.1", uri: "/files/uploads/\(id.hex.uppercased())/x.png")
                == .notFound
        )
        #expect(
            router.route(method: .PUT, host: "127.0.0.1", uri: "/storage/upload/\(id.hex)/not a token") == .notFound
        )
        #expect(router.route(method: .PUT, host: "127.0.0.1", uri: "/storage/upload/\(id.hex)/short") == .notFound)
        #expect(
            router.route(method: .POST, host: "127.0.0.1", uri: "/storage/upload/\(id.hex)/abcdef0123456789.ff00")
                == .methodNotAllowed
        )
        #expect(router.route(method: .GET, host: "127.0.0.1", uri: "/storage/upload/initiate") == .methodNotAllowed)
        #expect(router.route(method: .GET, host: "127.0.0.1", uri: "/storage/auth/token") == .methodNotAllowed)
    }

    @Test func uploadsDrawFromTheSubmissionBudget() {
        #expect(RateLimitPolicy.Budget(route: .uploadInitiate) == .submissions)
        #expect(RateLimitPolicy.Budget(route: .v3Upload) == .submissions)
        #expect(RateLimitPolicy.Budget(route: .storageToken) == .reads)
        #expect(RateLimitPolicy.Budget(route: .uploadAlias(id)) == nil)  // media: not limited
        #expect(RateLimitPolicy.Budget(route: .uploadPut(id: id, token: "x")) == nil)  // paid for at initiate
    }

    @Test(arguments: ["v3.fal.media", "127.0.0.1:8443"])
    func multipartSteps(host: String) {
        let upload = Digest128(hex: "0123456789abcdef0123456789abcdef")!
        let base = "/files/uploads/\(id.hex)/clip.mp4/multipart/\(upload.hex)"
        let signed = "/storage/upload/multipart/\(upload.hex)/abcdef0123456789.ff00"
        let token = "abcdef0123456789.ff00"
        #expect(router.route(method: .POST, host: host, uri: "/files/upload/multipart") == .multipartUpload(.create))
        #expect(
            router.route(method: .PUT, host: host, uri: "\(base)/7")
                == .multipartUpload(.part(file: id, upload: upload, number: 7))
        )
        #expect(
            router.route(method: .POST, host: host, uri: "\(base)/complete")
                == .multipartUpload(.complete(file: id, upload: upload))
        )
        #expect(
            router.route(method: .POST, host: host, uri: "/storage/upload/initiate-multipart?storage_type=fal-cdn-v3")
                == .multipartUpload(.initiate)
        )
        #expect(
            router.route(method: .PUT, host: host, uri: "\(signed)/2")
                == .multipartUpload(.signedPart(upload: upload, token: token, number: 2))
        )
        #expect(
            router.route(method: .POST, host: host, uri: "\(signed)/complete")
                == .multipartUpload(.signedComplete(upload: upload, token: token))
        )
        // A part number that is not one still reaches the upload, which answers 400 (not a 404 for a mistyped URL).
        #expect(
            router.route(method: .PUT, host: host, uri: "\(base)/abc")
                == .multipartUpload(.part(file: id, upload: upload, number: 0))
        )
        #expect(
            router.route(method: .PUT, host: host, uri: "\(base)/99999999999")
                == .multipartUpload(.part(file: id, upload: upload, number: 0))
        )
        #expect(router.route(method: .GET, host: host, uri: "\(base)/1") == .methodNotAllowed)
        #expect(router.route(method: .PUT, host: host, uri: "\(base)/complete") == .methodNotAllowed)
        #expect(router.route(method: .GET, host: host, uri: "/files/upload/multipart") == .methodNotAllowed)
        #expect(
            router.route(method: .PUT, host: host, uri: "/files/uploads/\(id.hex)/x/multipart/nothex/1") == .notFound
        )
        #expect(
            router.route(method: .PUT, host: host, uri: "/files/uploads/\(id.hex)/x/other/\(upload.hex)/1") == .notFound
        )
        #expect(
            router.route(method: .PUT, host: host, uri: "/storage/upload/multipart/\(upload.hex)/short/1") == .notFound
        )
        #expect(
            router.route(method: .POST, host: host, uri: "/storage/upload/complete-multipart?storage_type=fal-cdn-v3")
                == .multipartUpload(.completeByURL)
        )
        // The stable file URL the multipart flow returns is still the upload alias.
        #expect(router.route(method: .GET, host: host, uri: "/files/uploads/\(id.hex)/clip.mp4") == .uploadAlias(id))
    }

    @Test func aCompletionByNameFindsTheUploadInItsURL() {
        let upload = Digest128(hex: "0123456789abcdef0123456789abcdef")!
        let token = "abcdef0123456789.ff00"
        let signed = MultipartUploadStep.signedComplete(upload: upload, token: token)
        let path = "/storage/upload/multipart/\(upload.hex)/\(token)"
        #expect(Router.signedCompletion(uploadURL: "https://127.0.0.1:8443\(path)") == signed)
        #expect(Router.signedCompletion(uploadURL: "https://rest.fal.ai\(path)?storage_type=fal-cdn-v3") == signed)
        #expect(Router.signedCompletion(uploadURL: path) == signed)
        #expect(Router.signedCompletion(uploadURL: "https://127.0.0.1:8443\(path)/1") == nil)
        #expect(Router.signedCompletion(uploadURL: "https://127.0.0.1:8443/storage/upload/initiate") == nil)
        #expect(Router.signedCompletion(uploadURL: "https://host") == nil)
        #expect(Router.signedCompletion(uploadURL: "") == nil)
    }

    @Test func multipartStepsAreChargedOnceAndCheckedWhereTheyAreAnswered() {
        let upload = Digest128(hex: "0123456789abcdef0123456789abcdef")!
        #expect(RateLimitPolicy.Budget(route: .multipartUpload(.initiate)) == .submissions)
        #expect(CallerRule(.multipartUpload(.initiate)) == .key)
        #expect(CallerRule(.multipartUpload(.completeByURL)) == .key)
        #expect(RateLimitPolicy.Budget(route: .multipartUpload(.completeByURL)) == nil)
        for step: MultipartUploadStep in [
            .create, .part(file: id, upload: upload, number: 1), .complete(file: id, upload: upload),
            .signedPart(upload: upload, token: "t", number: 1), .signedComplete(upload: upload, token: "t"),
        ] {
            // v3 creation is charged as a v3 upload by its responder; parts and completion belong to a paid upload.
            #expect(RateLimitPolicy.Budget(route: .multipartUpload(step)) == nil)
            #expect(CallerRule(.multipartUpload(step)) == .signedURL)
        }
    }

    @Test func storageTokenExpiryHasAnExplicitOffsetAndNeverOverstates() {
        let now = Timestamp(secondsSinceEpoch: 1_795_574_398.75)
        let expiry = UploadService.expiry(now: now, seconds: 3600)
        #expect(expiry.secondsSinceEpoch == 1_795_574_398 + 3600)
        #expect(UploadService.expiry(now: now, seconds: 99_999).secondsSinceEpoch == 1_795_574_398 + 3600)  // token cap
        #expect(UploadService.expiry(now: now, seconds: 1).secondsSinceEpoch == 1_795_574_398 + 10)
        let body = UploadService.storageTokenBody(token: "t", expiresAt: expiry, baseURL: "https://127.0.0.1:8443")
        #expect(body["token_type"] == "Bearer")
        #expect(body["expires_at"]?.stringValue == "2026-11-25T03:39:58.000000+00:00")
    }

    @Test func fileNamesAreSafeInURLs() {
        #expect(UploadService.safeFileName("photo.png") == "photo.png")
        #expect(UploadService.safeFileName("x y/../é.png") == "x_y_.._é.png".replacingOccurrences(of: "é", with: "_"))
        #expect(UploadService.safeFileName("..hidden") == "hidden")
        #expect(UploadService.safeFileName("") == "upload.bin")
    }
}

@Suite struct UploadReceiverTests {
    func chunk(_ count: Int) -> ByteBuffer {
        ByteBuffer(repeating: 7, count: count)
    }

    @Test func writesOneAtATimeAndPausesReadingAtTheHighWaterMark() {
        var receiver = UploadReceiver(limit: 100, highWater: 10)
        var first = chunk(4)
        let start = receiver.received(&first)
        #expect(start.write?.readableBytes == 4)  // nothing in flight: written at once
        var second = chunk(6)
        #expect(receiver.received(&second).write == nil)  // a write is in flight: collected
        #expect(receiver.pendingBytes == 6)
        var third = chunk(5)
        let pause = receiver.received(&third)
        #expect(pause.reading == false)  // 11 ≥ 10 pending: stop reading the socket
        #expect(receiver.paused)
        let resume = receiver.writeSucceeded()
        #expect(resume.write?.readableBytes == 11)  // everything collected goes in one write
        #expect(resume.reading == true)
        #expect(!receiver.paused)
        #expect(receiver.endReceived().finish == false)  // still writing
        let finish = receiver.writeSucceeded()
        #expect(finish.finish)
        #expect(finish.write == nil)
        #expect(receiver.writeSucceeded().finish == false)  // done: nothing more happens
    }

    @Test func overTheLimitFailsWith413AndStops() {
        var receiver = UploadReceiver(limit: 10, highWater: 4)
        var a = chunk(8)
        _ = receiver.received(&a)
        var b = chunk(3)
        let over = receiver.received(&b)
        #expect(over.failure?.status == 413)
        #expect(over.write == nil)
        #expect(receiver.writeSucceeded().write == nil)
        #expect(receiver.endReceived().finish == false)
    }

    @Test func aFailedWriteEndsTheUploadWithItsError() {
        var receiver = UploadReceiver(limit: 100, highWater: 4)
        var a = chunk(3)
        _ = receiver.received(&a)
        var b = chunk(3)
        _ = receiver.received(&b)
        let failed = receiver.writeFailed(.insufficientStorage())
        #expect(failed.failure?.status == 507)
        #expect(receiver.endReceived().finish == false)
    }

    @Test func aFailureWhilePausedResumesReading() {
        // The request's end was already decoded when reading paused; the connection stays open after the error,
        // so it must read again or its next request would hang.
        var receiver = UploadReceiver(limit: 100, highWater: 4)
        var a = chunk(3)
        _ = receiver.received(&a)
        var b = chunk(5)
        #expect(receiver.received(&b).reading == false)
        #expect(receiver.endReceived().finish == false)
        let failed = receiver.writeFailed(.insufficientStorage())
        #expect(failed.failure?.status == 507)
        #expect(failed.reading == true)
        #expect(receiver.ended)
    }

    @Test func anEmptyBodyFinishesAtTheEnd() {
        var receiver = UploadReceiver(limit: 100)
        #expect(receiver.endReceived().finish)
    }
}
