import Hermetic
