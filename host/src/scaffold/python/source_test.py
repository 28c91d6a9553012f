import unittest

from logic import samples


class SamplesTest(unittest.TestCase):
    def test_reports_the_number(self):
        self.assertEqual(samples("x", {"value": 3}), [("x.value", 3.0)])
        with self.assertRaises(ValueError):
            samples("x", {"value": "three"})


if __name__ == "__main__":
    unittest.main()
