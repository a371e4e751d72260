import RelayMedia
import Testing

@Suite("SyntheticVideo")
struct SyntheticVideoTests {
    @Test("frame 0 is the still picture; frames are deterministic")
    func firstFrame() {
        let frames = SyntheticVideo.frames(prompt: "clouds over hills", seed: 4, width: 120, height: 90, count: 5)
        #expect(frames.count == 5)
        #expect(frames.allSatisfy { $0.width == 120 && $0.height == 90 })
        #expect(frames[0] == SyntheticPicture.render(prompt: "clouds over hills", seed: 4, width: 120, height: 90))
        #expect(frames == SyntheticVideo.frames(prompt: "clouds over hills", seed: 4, width: 120, height: 90, count: 5))
        #expect(
            SyntheticVideo.frame(prompt: "clouds over hills", seed: 4, width: 120, height: 90, index: 3) == frames[3]
        )
    }

    @Test("the same scene moves: neighbours differ a little, distant frames more")
    func motion() {
        let frames = SyntheticVideo.frames(prompt: "a lighthouse at dusk", seed: 42, width: 160, height: 120, count: 25)
        let step = ImageDifference.mean(frames[0], frames[1])
        let far = ImageDifference.mean(frames[0], frames[24])
        let other = SyntheticPicture.render(prompt: "a lighthouse at dusk", seed: 7, width: 160, height: 120)
        let otherScene = ImageDifference.mean(frames[0], other)
        #expect(step > 0, "frames should move")
        #expect(step < 3, "neighbouring frames should be close: \(step)")
        #expect(far > step, "motion should accumulate: \(far) vs \(step)")
        #expect(far < otherScene, "still the same scene: \(far) vs another scene \(otherScene)")
    }

    @Test("a count below 1 still yields one frame")
    func minimumCount() {
        #expect(SyntheticVideo.frames(prompt: "p", seed: 1, width: 8, height: 8, count: 0).count == 1)
        #expect(SyntheticVideo.frames(prompt: "p", seed: 1, width: 8, height: 8, count: -3).count == 1)
    }
}
