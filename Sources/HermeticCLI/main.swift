import Hermetic
print("hermetic")
