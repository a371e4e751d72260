/// Turns an RGB raster into PNG scanlines: each row gets a filter-type byte, then its bytes
/// predicted from their neighbours. Row 0 uses Sub (1); every later row uses Paeth (4), which
/// handles both horizontal and vertical gradients well, and costs one pass.
enum ScanlineFilter {
    static func filtered(_ image: RGBImage) -> [UInt8] {
        let width = image.width
        let height = image.height
        let stride = width * 3
        precondition(image.pixels.count == stride * height, "RGBImage.pixels has the wrong size")
        let rowBytes = stride + 1
        return [UInt8](unsafeUninitializedCapacity: rowBytes * height) { buffer, initialized in
            image.pixels.withUnsafeBufferPointer { source in
                // Raw pointers: unchecked subscripts keep debug builds tolerable.
                let src = source.baseAddress!
                let dst = buffer.baseAddress!
                dst[0] = 1
                var i = 0
                while i < 3 {
                    dst[1 + i] = src[i]
                    i += 1
                }
                while i < stride {
                    dst[1 + i] = src[i] &- src[i - 3]
                    i += 1
                }
                var y = 1
                while y < height {
                    let row = src + y * stride
                    let up = row - stride
                    let out = dst + y * rowBytes
                    out[0] = 4
                    // First pixel: left and up-left are 0, so Paeth predicts `up`.
                    i = 0
                    while i < 3 {
                        out[1 + i] = row[i] &- up[i]
                        i += 1
                    }
                    while i < stride {
                        let a = Int(row[i - 3])
                        let b = Int(up[i])
                        let c = Int(up[i - 3])
                        var pa = b - c
                        var pb = a - c
                        var pc = pa + pb
                        if pa < 0 { pa = -pa }
                        if pb < 0 { pb = -pb }
                        if pc < 0 { pc = -pc }
                        let predictor: Int
                        if pa <= pb && pa <= pc {
                            predictor = a
                        } else if pb <= pc {
                            predictor = b
                        } else {
                            predictor = c
                        }
                        out[1 + i] = row[i] &- UInt8(truncatingIfNeeded: predictor)
                        i += 1
                    }
                    y += 1
                }
            }
            initialized = rowBytes * height
        }
    }
}
