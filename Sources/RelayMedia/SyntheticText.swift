/// Text standing in for a language model: prose-like sentences that weave in the prompt's
/// content words, as a token stream (words, punctuation and whitespace are separate tokens,
/// so joining them gives the text). Same prompt and seed, same tokens.
public enum SyntheticText {
    /// - Returns: a natural-length answer (about 4 to 9 sentences, in paragraphs) cut short at
    ///   `maxTokens` tokens if it is longer; empty if `maxTokens` < 1. Callers can treat
    ///   `count == maxTokens` as a length stop and anything shorter as a natural stop.
    public static func tokens(prompt: String, seed: UInt64, maxTokens: Int) -> [String] {
        guard maxTokens > 0 else { return [] }
        var writer = ProseWriter(prompt: prompt, seed: seed)
        return writer.write(maxTokens: maxTokens)
    }

    /// Splits text into word, punctuation and whitespace tokens; joining them gives `text` back.
    public static func tokenize(_ text: String) -> [String] {
        var tokens: [String] = []
        var current = ""
        var currentKind = 0  // 1 word, 2 whitespace
        for character in text {
            let kind =
                character.isLetter || character.isNumber || character == "'"
                ? 1
                : (character.isWhitespace ? 2 : 3)
            if kind == currentKind && kind != 3 {
                current.append(character)
            } else {
                if !current.isEmpty { tokens.append(current) }
                current = String(character)
                currentKind = kind
            }
        }
        if !current.isEmpty { tokens.append(current) }
        return tokens
    }
}
