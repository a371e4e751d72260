import RelayStore
import Testing

@Suite("MediaType")
struct MediaTypeTests {
    @Test func knownExtensions() {
        let expected: [String: (String, String)] = [
            "png": ("image/png", "png"), "apng": ("image/apng", "apng"), "jpg": ("image/jpeg", "jpg"),
            "jpeg": ("image/jpeg", "jpg"), "webp": ("image/webp", "webp"), "gif": ("image/gif", "gif"),
            "mp4": ("video/mp4", "mp4"), "webm": ("video/webm", "webm"), "wav": ("audio/wav", "wav"),
            "mp3": ("audio/mpeg", "mp3"), "json": ("application/json", "json"),
            "txt": ("text/plain; charset=utf-8", "txt"), "bin": ("application/octet-stream", "bin"),
        ]
        for (ext, (contentType, canonical)) in expected {
            let type = MediaType.forExtension(ext)
            #expect(type?.contentType == contentType, "\(ext)")
            #expect(type?.fileExtension == canonical, "\(ext)")
        }
        #expect(MediaType.forExtension("PNG") == .png)
        #expect(MediaType.forExtension(".wav") == .wav)
        #expect(MediaType.forExtension("exe") == nil)
        #expect(MediaType.forExtension("") == nil)
    }

    @Test func contentTypesIgnoreParametersAndCase() {
        #expect(MediaType.forContentType("image/png") == .png)
        #expect(MediaType.forContentType("IMAGE/PNG") == .png)
        #expect(MediaType.forContentType("text/plain") == .text)
        #expect(MediaType.forContentType("text/plain;charset=UTF-8") == .text)
        #expect(MediaType.forContentType("application/json; charset=utf-8") == .json)
        #expect(MediaType.forContentType("audio/x-wav") == .wav)
        #expect(MediaType.forContentType("audio/wave") == .wav)
        #expect(MediaType.forContentType("image/jpg") == .jpeg)
        #expect(MediaType.forContentType("audio/mp3") == .mp3)
        #expect(MediaType.forContentType("application/ld+json") == .json)
        #expect(MediaType.forContentType("text/csv") == .text)
        #expect(MediaType.forContentType("application/x-unknown") == .octetStream)
        #expect(MediaType.forContentType("") == .octetStream)
    }

    @Test func compressibility() {
        for type in [MediaType.wav, .json, .text, .bmp, .ppm, .svg] {
            #expect(type.isCompressible, "\(type)")
        }
        for type in [MediaType.png, .apng, .jpeg, .webp, .gif, .mp4, .webm, .mp3, .octetStream] {
            #expect(!type.isCompressible, "\(type)")
        }
        #expect(MediaType(contentType: "text/html; charset=utf-8", fileExtension: "html").isCompressible)
        #expect(MediaType(contentType: "Audio/X-WAV", fileExtension: "wav").isCompressible)
    }

    @Test func everyKnownTypeRoundTripsThroughItsExtensionAndContentType() {
        for type in MediaType.known {
            #expect(MediaType.forExtension(type.fileExtension) == type)
            #expect(MediaType.forContentType(type.contentType) == type)
        }
    }
}
