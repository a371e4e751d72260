/// Calendar arithmetic on UTC timestamps: ISO-8601 reading, and the start of the minute, hour, day, ISO week or month
/// a time falls in (the Platform API's usage buckets).
extension Timestamp {
    public enum Period: String, Sendable, Hashable, CaseIterable {
        case minute, hour, day, week, month
    }

    /// `2026-12-06`, `2026-12-06T10:00:00Z`, `2026-12-06T10:00:00.5+01:00` (a date alone is its midnight, UTC);
    /// nil for anything else.
    public init?(iso8601 text: String) {
        let bytes = Array(text.utf8)
        func number(_ range: Range<Int>) -> Int64? {
            guard range.upperBound <= bytes.count, !range.isEmpty else { return nil }
            var value: Int64 = 0
            for byte in bytes[range] {
                guard (48...57).contains(byte) else { return nil }
                value = value * 10 + Int64(byte - 48)
            }
            return value
        }
        guard bytes.count >= 10, bytes[4] == UInt8(ascii: "-"), bytes[7] == UInt8(ascii: "-"),
            let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
            (1...12).contains(month), (1...31).contains(day)
        else { return nil }
        let days = Self.days(year: year, month: month, day: day)
        // 2026-02-31 is no date (it would read as March 3rd).
        guard Self.civil(fromDays: days) == (year, month, day) else { return nil }
        var seconds = Double(days * 86_400)
        guard bytes.count > 10 else {
            self.init(secondsSinceEpoch: seconds)
            return
        }
        guard bytes.count >= 19, bytes[10] == UInt8(ascii: "T") || bytes[10] == UInt8(ascii: " "),
            bytes[13] == UInt8(ascii: ":"), bytes[16] == UInt8(ascii: ":"),
            let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19),
            hour < 24, minute < 60, second < 61
        else { return nil }
        seconds += Double(hour * 3600 + minute * 60 + second)
        var index = 19
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            var end = index + 1
            while end < bytes.count, (48...57).contains(bytes[end]) { end += 1 }
            guard end > index + 1, let fraction = Double("0" + String(decoding: bytes[index..<end], as: UTF8.self))
            else { return nil }
            seconds += fraction
            index = end
        }
        if index == bytes.count || (index == bytes.count - 1 && (bytes[index] | 0x20) == UInt8(ascii: "z")) {
            self.init(secondsSinceEpoch: seconds)
            return
        }
        guard bytes.count == index + 6, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-"),
            bytes[index + 3] == UInt8(ascii: ":"), let offsetHours = number(index + 1..<index + 3),
            let offsetMinutes = number(index + 4..<index + 6), offsetHours < 24, offsetMinutes < 60
        else { return nil }
        let offset = Double(offsetHours * 3600 + offsetMinutes * 60)
        self.init(secondsSinceEpoch: bytes[index] == UInt8(ascii: "+") ? seconds - offset : seconds + offset)
    }

    /// The start (UTC) of the `period` this instant falls in; weeks start on Monday (ISO 8601).
    public func start(of period: Period) -> Timestamp {
        let whole = Int64(secondsSinceEpoch.rounded(.down))
        var days = whole / 86_400
        if whole % 86_400 < 0 { days -= 1 }
        switch period {
        case .minute: return Timestamp(secondsSinceEpoch: Double(whole - Self.modulo(whole, 60)))
        case .hour: return Timestamp(secondsSinceEpoch: Double(whole - Self.modulo(whole, 3600)))
        case .day: return Timestamp(secondsSinceEpoch: Double(days * 86_400))
        case .week:
            // 1970-01-01 was a Thursday: Monday is 3 days before it.
            return Timestamp(secondsSinceEpoch: Double((days - Self.modulo(days + 3, 7)) * 86_400))
        case .month:
            let (year, month, _) = Self.civil(fromDays: days)
            return Timestamp(secondsSinceEpoch: Double(Self.days(year: year, month: month, day: 1) * 86_400))
        }
    }

    /// The start of the `period` after the one this instant falls in.
    public func startOfNext(_ period: Period) -> Timestamp {
        let start = start(of: period)
        switch period {
        case .minute: return Timestamp(secondsSinceEpoch: start.secondsSinceEpoch + 60)
        case .hour: return Timestamp(secondsSinceEpoch: start.secondsSinceEpoch + 3600)
        case .day: return Timestamp(secondsSinceEpoch: start.secondsSinceEpoch + 86_400)
        case .week: return Timestamp(secondsSinceEpoch: start.secondsSinceEpoch + 7 * 86_400)
        case .month: return Timestamp(secondsSinceEpoch: start.secondsSinceEpoch + 32 * 86_400).start(of: .month)
        }
    }

    private static func modulo(_ value: Int64, _ divisor: Int64) -> Int64 {
        let remainder = value % divisor
        return remainder < 0 ? remainder + divisor : remainder
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days-from-civil).
    static func days(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }
}
