import RelayMedia
import Testing

@Suite("SyntheticText")
struct SyntheticTextTests {
    static func kind(_ token: String) -> Int {
        if token.allSatisfy({ $0.isWhitespace }) { return 2 }
        if token.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "'" }) { return 1 }
        return token.count == 1 ? 3 : 0
    }

    @Test("deterministic, and seeds change the text")
    func determinism() {
        let tokens = SyntheticText.tokens(prompt: "Tell me about lighthouses", seed: 1, maxTokens: 400)
        #expect(tokens == SyntheticText.tokens(prompt: "Tell me about lighthouses", seed: 1, maxTokens: 400))
        #expect(tokens != SyntheticText.tokens(prompt: "Tell me about lighthouses", seed: 2, maxTokens: 400))
    }

    @Test("tokens are single words, whitespace runs or punctuation marks", arguments: UInt64(0)..<20)
    func tokenShapes(seed: UInt64) {
        let tokens = SyntheticText.tokens(prompt: "a lighthouse at dusk", seed: seed, maxTokens: 1_000)
        #expect(!tokens.isEmpty)
        for token in tokens {
            #expect(Self.kind(token) != 0, "mixed token \(token.debugDescription)")
        }
        for (a, b) in zip(tokens, tokens.dropFirst()) where Self.kind(a) != 3 {
            #expect(
                Self.kind(a) != Self.kind(b),
                "adjacent tokens of one kind: \(a.debugDescription) \(b.debugDescription)"
            )
        }
    }

    @Test("reads like prose and echoes the prompt's words", arguments: UInt64(0)..<10)
    func prose(seed: UInt64) {
        let tokens = SyntheticText.tokens(prompt: "Write about a lighthouse at dusk", seed: seed, maxTokens: 1_000)
        let text = tokens.joined()
        #expect(text.contains("lighthouse"))
        #expect(text.contains("dusk"))
        #expect(text.first?.isUppercase == true)
        #expect([".", "?", "!"].contains(tokens.last!), "ends mid-sentence: \(text)")
        #expect(tokens.count < 1_000, "should stop naturally")
        #expect(tokens.count > 30)
        let words = tokens.filter { Self.kind($0) == 1 }
        #expect(Set(words).count > 15, "too repetitive: \(text)")
        #expect(
            !text.contains(" a a") && !text.contains(" a e") && !text.contains(" a u"),
            "article not fixed: \(text)"
        )
    }

    @Test("maxTokens caps the stream exactly")
    func cap() {
        let full = SyntheticText.tokens(prompt: "sailing", seed: 5, maxTokens: 10_000)
        #expect(SyntheticText.tokens(prompt: "sailing", seed: 5, maxTokens: 7) == Array(full.prefix(7)))
        #expect(SyntheticText.tokens(prompt: "sailing", seed: 5, maxTokens: 1).count == 1)
        #expect(SyntheticText.tokens(prompt: "sailing", seed: 5, maxTokens: 0).isEmpty)
        #expect(SyntheticText.tokens(prompt: "sailing", seed: 5, maxTokens: -4).isEmpty)
    }

    @Test("prompts without content words still get an answer")
    func emptyPrompt() {
        #expect(SyntheticText.tokens(prompt: "", seed: 1, maxTokens: 100).count > 10)
        #expect(SyntheticText.tokens(prompt: "what is it?", seed: 1, maxTokens: 100).count > 10)
    }

    @Test("tokenize round-trips any text")
    func tokenize() {
        let text = "Hello,  world!\n\nIt's 42 — ünïcode… ok?"
        let tokens = SyntheticText.tokenize(text)
        #expect(tokens.joined() == text)
        #expect(tokens.prefix(4) == ["Hello", ",", "  ", "world"])
    }
}
